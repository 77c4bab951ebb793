# The demo service with pyprof_http mounted, under uvicorn.
FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY demo_app ./demo_app
RUN pip install --no-cache-dir ".[demo]"
EXPOSE 8000
# The profiler answers loopback clients only by default: inside a container, reach it with
# `docker exec <id> curl 127.0.0.1:8000/debug/pprof/` or configure a token before exposing it.
CMD ["uvicorn", "demo_app.main:app", "--host", "0.0.0.0", "--port", "8000"]
