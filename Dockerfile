# policyauth serve: the forward-auth service (docs/serve.md). Mount a policy at
# /etc/policyauth/policy.policy; arguments to `docker run` are added to the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY grammar ./grammar
COPY policyauth ./policyauth
RUN pip install --no-cache-dir '.[serve,metrics]' && rm -rf /src

RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin policyauth \
    && mkdir -p /etc/policyauth
USER policyauth
WORKDIR /etc/policyauth

EXPOSE 9000
HEALTHCHECK --interval=30s --timeout=3s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9000/healthz', timeout=2)"]
ENTRYPOINT ["policyauth", "serve", "/etc/policyauth/policy.policy", "--host", "0.0.0.0", "--port", "9000"]
