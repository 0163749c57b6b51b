FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY telephony telephony
COPY session session
COPY providers providers
COPY infra infra
RUN pip install --no-cache-dir .
EXPOSE 8000
CMD ["voice-gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]
