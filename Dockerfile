# foldcnn serve on the slim install: numpy, Pillow, onnxruntime, FastAPI; no torch.
# It serves an exported graph (foldcnn export CHECKPOINT --out model.onnx [--precision int8], run
# where torch is installed) mounted at /model:
#
#   docker build -t foldcnn-serve .
#   docker run -p 8000:8000 -v "$PWD/export:/model:ro" foldcnn-serve
#   curl -F image=@one.png http://localhost:8000/v1/classify
#
# docs/runtime.md says more (image size, what serve needs to run without torch).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 OMP_NUM_THREADS=1
WORKDIR /build
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install ".[runtime,serve]" \
    && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)" \
    && rm -rf /build
RUN useradd --create-home --uid 1000 foldcnn
USER foldcnn
WORKDIR /model
EXPOSE 8000
ENTRYPOINT ["foldcnn", "serve"]
CMD ["/model/model.onnx", "--host", "0.0.0.0", "--port", "8000"]
