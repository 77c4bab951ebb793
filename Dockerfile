# The demo service with pyprof_http mounted, under uvicorn.
#   docker build -t pyprof-demo .
#   docker run --rm -p 8000:8000 pyprof-demo                      # prints a generated token
#   docker run --rm -p 8000:8000 -e PYPROF_TOKEN="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')" pyprof-demo
FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY src ./src
COPY demo_app ./demo_app
RUN pip install --no-cache-dir ".[demo]" && useradd --system --no-create-home app
USER app
EXPOSE 8000
# From the host, requests come from Docker's bridge, not loopback, and pyprof_http answers
# loopback clients only unless a token is set. demo_app/start.py uses PYPROF_TOKEN or generates
# one, allows the container's attached networks (unless PYPROF_ALLOW_CLIENTS is given), prints
# the `curl -u :TOKEN` line and the browser login hint, then runs uvicorn with these arguments.
CMD ["python", "-m", "demo_app.start", "--host", "0.0.0.0", "--port", "8000"]
