#!/usr/bin/env bash
# Builds Triton's ONNX Runtime backend (CPU only) for the tritonserver of `make tools`, so that the
# cluster profile (`platform: "onnxruntime_onnx"`, what the NGC image serves) can run and be
# benchmarked on a machine without that image:
#
#   bash hack/triton-onnxruntime-backend.sh SOURCES OUTDIR
#   python benchmarks/serving.py --native-backend OUTDIR
#
# SOURCES holds checkouts of github.com/triton-inference-server/{onnxruntime_backend,backend,core,common}
# on the branch of the tritonserver of `make tools` (r24.10 for nvidia-pytriton 0.7.0), and
# include/ with onnxruntime_c_api.h and onnxruntime_ep_c_api.h of an onnxruntime no newer than the
# one in Triton's environment (its C API serves every older version). Those sources live on GitHub,
# not on a package registry, so `make tools` cannot fetch them and nothing in `make test` needs this.
# Needs cmake, a C++17 compiler, RapidJSON and googletest's sources (Debian: rapidjson-dev, googletest).
#
# OUTDIR/onnxruntime/ receives libtriton_onnxruntime.so, next to links to the onnxruntime library of
# Triton's environment and to its libtritonserver (the wheel renames it; the backend asks for
# libtritonserver.so, and a link to the same file resolves to the copy tritonserver has loaded).
set -euo pipefail
sources=$(realpath "${1:?usage: hack/triton-onnxruntime-backend.sh SOURCES OUTDIR}")
out=$(realpath -m "${2:?usage: hack/triton-onnxruntime-backend.sh SOURCES OUTDIR}")
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=.venv/bin/python
triton_venv=$($python -c 'from ganforge.local import tools; print(tools.tool_path("tritonserver").parent.parent / "venv")')
site=$(ls -d "$triton_venv"/lib/python3.*/site-packages)
onnxruntime_library=$(ls "$site"/onnxruntime/capi/libonnxruntime.so.1.* | head -1)
tritonserver_library=$(ls "$site"/nvidia_pytriton.libs/libtritonserver-*.so | head -1)
for repo in onnxruntime_backend backend core common; do
  [[ -f $sources/$repo/CMakeLists.txt ]] || { echo "$sources/$repo: no checkout of triton-inference-server/$repo" >&2; exit 2; }
done
[[ -f $sources/include/onnxruntime_c_api.h ]] || { echo "$sources/include/onnxruntime_c_api.h: missing" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The backend links against `onnxruntime` found by name; the wheel ships only the versioned file.
mkdir -p "$work/lib"
ln -s "$onnxruntime_library" "$work/lib/libonnxruntime.so"
# Every dependency comes from SOURCES: nothing is downloaded (common's tests want googletest's sources).
cmake -S "$sources/onnxruntime_backend" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DTRITON_ENABLE_GPU=OFF -DTRITON_ENABLE_ONNXRUNTIME_TENSORRT=OFF -DTRITON_ENABLE_ONNXRUNTIME_OPENVINO=OFF \
  -DTRITON_CORE_HEADERS_ONLY=ON \
  -DTRITON_ONNXRUNTIME_INCLUDE_PATHS="$sources/include" -DTRITON_ONNXRUNTIME_LIB_PATHS="$work/lib" \
  -DFETCHCONTENT_FULLY_DISCONNECTED=ON \
  -DFETCHCONTENT_SOURCE_DIR_REPO-COMMON="$sources/common" -DFETCHCONTENT_SOURCE_DIR_REPO-CORE="$sources/core" \
  -DFETCHCONTENT_SOURCE_DIR_REPO-BACKEND="$sources/backend" -DFETCHCONTENT_SOURCE_DIR_GOOGLETEST=/usr/src/googletest
cmake --build "$work/build" --target triton-onnxruntime-backend -j "$(nproc)"

mkdir -p "$out/onnxruntime"
cp "$work/build/libtriton_onnxruntime.so" "$out/onnxruntime/"
ln -sf "$onnxruntime_library" "$out/onnxruntime/libonnxruntime.so.1"
ln -sf "$tritonserver_library" "$out/onnxruntime/libtritonserver.so"
echo "built $out/onnxruntime/libtriton_onnxruntime.so"
