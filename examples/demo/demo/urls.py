from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path

urlpatterns = [path("", include("jobs.urls"))]
# runserver serves the static files itself; gunicorn needs this (DEBUG only).
urlpatterns += staticfiles_urlpatterns()
