#!/usr/bin/env bash
# Rebuilds dreamtext/view/assets/vendor/three-viewer.min.js, the one third-party script of
# `dreamtext view`: three.js with GLTFLoader and OrbitControls, bundled by esbuild
# into a classic script that defines `window.THREE`. A classic script, not ES modules, because
# Chromium blocks module scripts on file:// pages, and `dreamtext view --static` writes such pages.
# Needs node and npm (the npm registry); nothing here runs when dreamtext runs.
set -euo pipefail
THREE_VERSION=0.187.0
ESBUILD_VERSION=0.28.2
repo="$(cd "$(dirname "$0")/.." && pwd)"
vendor="$repo/dreamtext/view/assets/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --ignore-scripts "three@$THREE_VERSION" "esbuild@$ESBUILD_VERSION" >/dev/null
cat > entry.js <<'JS'
export {
  Box3, Color, DirectionalLight, HemisphereLight, PerspectiveCamera, REVISION, Scene,
  SRGBColorSpace, Vector3, WebGLRenderer,
} from "three";
export { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
export { OrbitControls } from "three/addons/controls/OrbitControls.js";
JS
./node_modules/.bin/esbuild entry.js --bundle --format=iife --global-name=THREE --minify \
  --legal-comments=eof --target=es2020 \
  --banner:js="/* three.js $THREE_VERSION (MIT, see LICENSE-three.txt): GLTFLoader, OrbitControls; built by scripts/build-viewer-vendor.sh */" \
  --outfile="$vendor/three-viewer.min.js"
cp node_modules/three/LICENSE "$vendor/LICENSE-three.txt"
echo "wrote $vendor/three-viewer.min.js"
