# voxtutor: offline-capable image (local tier models are assembled at build time).
# Build: docker build -t voxtutor .
# Run a session on a mounted recording:
#   docker run --rm -v "$PWD/in:/in" -v "$PWD/out:/out" voxtutor \
#     session --persona german-tutor --audio /in/turn1.wav --out /out
FROM python:3.11-slim-bookworm

# SVOX Pico speaks German (Debian non-free, enabled here), Festival Czech, espeak-ng is their
# fallback; build tools compile llama.cpp (llama-cpp-python is an sdist).
RUN printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: contrib non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      > /etc/apt/sources.list.d/voxtutor-non-free.sources \
 && apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng libttspico-utils festival \
      festival-czech festvox-czech-dita festvox-czech-machac build-essential cmake libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md cli.py server.py alembic.ini ./
COPY api ./api
COPY config ./config
COPY contracts ./contracts
COPY observers ./observers
COPY pipelines ./pipelines
COPY processors ./processors
COPY runtime ./runtime
COPY services ./services
COPY store ./store
COPY transports ./transports
COPY weights ./weights
COPY web ./web

# Portable CPU build (no -march=native): AVX2/FMA/F16C cover x86-64 servers of the last decade.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
# Editable install: server.py serves web/ from beside itself.
RUN pip install --no-cache-dir -e . \
 && apt-get purge -y build-essential cmake && apt-get autoremove -y

ENV VOXTUTOR_HOME=/var/lib/voxtutor
RUN voxtutor models install

RUN useradd --system --home /app voxtutor && chown -R voxtutor /var/lib/voxtutor /app
USER voxtutor
EXPOSE 8080
ENV VOXTUTOR_HOST=0.0.0.0
ENTRYPOINT ["voxtutor"]
CMD ["serve"]
