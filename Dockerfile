# syntax=docker/dockerfile:1
# partslip_ros on ROS 2 Jazzy with GPU detectors: GLIP (official maskrcnn_benchmark), Grounding DINO, OWLv2.
#
#   docker build -t partslip_ros .
#   docker run --rm -it --gpus all --net host -v "$PWD/models:/models" partslip_ros \
#       ros2 launch partslip_ros segment.launch.py input_topic:=/camera/points parts:="[handle, lid]"
#
# Weights are not baked in: mount a models folder (`partslip models download ...`, models/README.md).
# Not buildable on the development machines (no Docker engine there): reviewed, not built.
FROM ros:jazzy-ros-base
# Ubuntu 24.04, Python 3.12, rosdep initialized by the base image.

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PIP_BREAK_SYSTEM_PACKAGES=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# CUDA 12.6 compiler + headers, only to compile GLIP's and pytorch3d's CUDA ops; the driver comes from the
# host (--gpus all). torch 2.3.1's PyPI wheel is built with CUDA 12.1: same major version, which is all
# torch's extension builder requires. Archs: A100 (8.0), RTX 30xx/A-series (8.6), RTX 40xx/L4 (8.9), H100 (9.0).
RUN apt-get update && apt-get install -y --no-install-recommends \
        build-essential git wget ninja-build python3-pip python3-dev libgl1 libglib2.0-0 libusb-1.0-0 libgomp1 \
    && wget -q https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/cuda-keyring_1.1-1_all.deb \
    && dpkg -i cuda-keyring_1.1-1_all.deb && rm cuda-keyring_1.1-1_all.deb \
    && apt-get update && apt-get install -y --no-install-recommends cuda-nvcc-12-6 cuda-libraries-dev-12-6 \
    && rm -rf /var/lib/apt/lists/*
ENV CUDA_HOME=/usr/local/cuda-12.6 PATH=/usr/local/cuda-12.6/bin:$PATH \
    TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0" FORCE_CUDA=1 MAX_JOBS=8

# PyTorch pinned to what the GLIP port below was tested with (torch 2.3.1), CUDA build from PyPI.
RUN pip install torch==2.3.1 torchvision==0.18.1

# transformers: GLIP's code imports helpers that transformers >= 4.47 no longer re-exports
# (transformers.modeling_utils.apply_chunking_to_forward, ...), so the image pins 4.46.3, which also has
# Grounding DINO and OWLv2 (partslip_core.detect.hf is tested against 4.46.3 and 5.24).
RUN pip install transformers==4.46.3 tokenizers==0.20.3 huggingface_hub==0.36.2 \
        einops==0.8.0 shapely==2.0.6 timm==0.9.16 yacs==0.1.8 ftfy==6.2.3 prettytable==3.12.0 tensorboardX==2.6.2.2 \
        pymongo==4.8.0 opencv-python-headless==4.10.0.84 nltk==3.9.1 inflect==7.4.0 pycocotools==2.0.8 iopath==0.1.10

# GLIP: upstream microsoft/GLIP does not compile on torch >= 1.11 (removed THC headers). PartSTAD (ECCV 2024,
# KAIST) ships GLIP ported to torch 2.3 (THC -> ATen) and keeps PartSLIP's list-caption entity fix; pinned commit.
# GLIP's setup.py only compiles the CUDA ops when a GPU is visible, which it is not during `docker build`:
# make it honour FORCE_CUDA, and fail the build if the extension came out CPU-only.
ARG PARTSTAD_COMMIT=23addcbc3c12175bf7a19697b60f19fad1c471fd
RUN git clone https://github.com/KAIST-Visual-AI-Group/PartSTAD.git /opt/PartSTAD \
    && git -C /opt/PartSTAD checkout "${PARTSTAD_COMMIT}" \
    && cd /opt/PartSTAD/GLIP \
    && sed -i 's/if torch.cuda.is_available() and CUDA_HOME is not None:/if (torch.cuda.is_available() or os.getenv("FORCE_CUDA") == "1") and CUDA_HOME is not None:/' setup.py \
    && grep -q 'FORCE_CUDA' setup.py \
    && python3 setup.py build develop \
    && ldd maskrcnn_benchmark/_C*.so | grep -q libc10_cuda
ENV GLIP_ROOT=/opt/PartSTAD/GLIP PARTSLIP_GLIP_CONFIG=/opt/PartSTAD/GLIP/configs/glip_Swin_L_pt.yaml

# pytorch3d (reference point rasterizer) from source at a release tag that supports torch 2.3.
RUN pip install --no-build-isolation "git+https://github.com/facebookresearch/pytorch3d.git@v0.7.8"

# Data GLIP fetches at import / model build, cached now so the container runs offline:
# nltk tokenizer/tagger data and bert-base-uncased (GLIP's text encoder and tokenizer).
ENV NLTK_DATA=/opt/nltk_data HF_HOME=/opt/hf PARTSLIP_MODELS_DIR=/models
RUN python3 -c "import nltk; [nltk.download(p, download_dir='/opt/nltk_data', quiet=True) for p in \
        ('punkt', 'punkt_tab', 'averaged_perceptron_tagger', 'averaged_perceptron_tagger_eng')]" \
    && python3 -c "from transformers import AutoTokenizer, BertModel; \
        AutoTokenizer.from_pretrained('bert-base-uncased'); BertModel.from_pretrained('bert-base-uncased')"

# The workspace: one ament_cmake package, partslip_ros (the repository root): `colcon build` generates the
# messages (msg/, srv/) and installs the node, partslip_core, the console scripts, launch/ and config/.
WORKDIR /ws
COPY requirements.txt /tmp/requirements.txt
# requirements.txt pins the CPU development stack (torch 2.13, transformers 5.x): keep everything else.
RUN grep -vE '^(torch|transformers|tokenizers)==' /tmp/requirements.txt > /tmp/requirements-docker.txt \
    && pip install -r /tmp/requirements-docker.txt
COPY . /ws/src/partslip_ros
RUN apt-get update && rosdep install --from-paths src --ignore-src -y --rosdistro jazzy \
    && rm -rf /var/lib/apt/lists/* \
    && source /opt/ros/jazzy/setup.bash \
    && colcon build --event-handlers console_direct+ --cmake-args -DBUILD_TESTING=OFF \
    && rm -rf build log

COPY <<'EOF' /ros_entrypoint.sh
#!/bin/bash
set -e
source /opt/ros/jazzy/setup.bash
source /ws/install/setup.bash
exec "$@"
EOF
RUN chmod +x /ros_entrypoint.sh
ENTRYPOINT ["/ros_entrypoint.sh"]
CMD ["ros2", "launch", "partslip_ros", "segment.launch.py"]
