# The demo service with pyprof_http mounted, under uvicorn.
FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY demo_app ./demo_app
RUN pip install --no-cache-dir ".[demo]" && useradd --system --no-create-home app
USER app
EXPOSE 8000
# The profiler answers loopback clients only by default. From the host, the peer is Docker's
# bridge address, so the endpoints answer 403 there: use
# `docker exec <id> python -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8000/debug/pprof/goroutine?debug=1').read().decode())"`
# or set PYPROF_TOKEN and PYPROF_ALLOW_CLIENTS before exposing them.
CMD ["uvicorn", "demo_app.main:app", "--host", "0.0.0.0", "--port", "8000"]
