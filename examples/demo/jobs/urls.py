from django.urls import path

from . import views

app_name = "jobs"
urlpatterns = [
    path("", views.index, name="index"),
    path("jobs/start/<str:kind>", views.start, name="start"),
    path("jobs/<int:pk>/status", views.status, name="status"),
]
