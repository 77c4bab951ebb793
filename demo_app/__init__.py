"""A FastAPI service with pyprof_http installed and traffic shapes worth looking at."""
