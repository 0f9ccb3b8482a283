#!/usr/bin/env bash
# Every GPU check of the renderer work, as one prepared run for a session that is lent a GPU
# (/work/.library/device/README.md: 15 minutes of device time, machine start included).
#
#   run: bash benchmarks/gpu_session.sh           (with carry: [".whl"] when wheels are needed)
#        bash benchmarks/gpu_session.sh compile   (a second command: the trainer with --compile)
#        bash benchmarks/gpu_session.sh field_compile trainer_eager   (the field's MLPs compiled
#            and eager, by field_cost.py; the trainer rows of check 4 with eager MLPs)
#        bash benchmarks/gpu_session.sh trainer512   (the trainer at 512 px)
#        bash benchmarks/gpu_session.sh trainer_separate trainer_bf16 trainer_window
#            (the trainer with a density head of its own, in bf16, and with the marcher's rounds
#            of a fixed width, as before stop 51)
#        bash benchmarks/gpu_session.sh trainer512_compile   (512 px, --compile, 11 GiB)
#        bash benchmarks/gpu_session.sh profile   (a step's phases and costliest operators)
#        bash benchmarks/gpu_session.sh fitted   (the SDS step of a field fitted to a sphere)
#        bash benchmarks/gpu_session.sh cudnn   (the SDS step with cuDNN's autotuner on)
#        bash benchmarks/gpu_session.sh vae_compile cudagraphs trainer_vae   (the VAE encoder
#            compiled, CUDA graphs for the guidance, the trainer with the encoder compiled)
#        bash benchmarks/gpu_session.sh fitted_compile fitted_vae fitted_graphs   (check fitted
#            compiled: as --compile, with the encoder, as CUDA graphs)
#        bash benchmarks/gpu_session.sh fitted_unet_graphs trainer_unet_graphs compile_unet
#            (--compile with the U-Net alone as CUDA graphs, speed and memory; the trainer as
#            --compile ran it before stop 55, beside them)
#        bash benchmarks/gpu_session.sh encoder_memory fitted_vae_ckpt trainer_vae_ckpt
#            (the encoder's peak with and without guidance.vae_checkpointing; --compile with it,
#            single steps of the fitted field and the trainer)
#        bash benchmarks/gpu_session.sh trainer_fitted trainer_fitted_ckpt   (--compile's trainer
#            rows from a field fitted to a sphere, a trained run's later steps, not the fresh fog;
#            then with guidance.vae_checkpointing)
#        bash benchmarks/gpu_session.sh allocator   (FitFusion's trainer, torch's default allocator)
#        bash benchmarks/gpu_session.sh card12 card12_fixed   (the trainer held to a 12 GB card)
#        bash benchmarks/gpu_session.sh normals   (analytic against forward-difference normals)
#        bash benchmarks/gpu_session.sh separate separate_analytic   (a density head of its own)
#        bash benchmarks/gpu_session.sh field_cost   (the field's work per sample, by part)
#        bash benchmarks/gpu_session.sh descriptor   (dreamtext image's descriptor training)
#        bash benchmarks/gpu_session.sh suite   (the whole test suite, CUDA wherever --device is auto)
#        bash benchmarks/gpu_session.sh syncdebug   (which lines of a trainer step make the host wait)
#        bash benchmarks/gpu_session.sh paths   (each CUDA path that has never run on a GPU, once,
#            smallest settings: one line 'PATH ok|FAIL <why>' a path; benchmarks/gpu_paths.py)
#        bash benchmarks/gpu_session.sh tests trainer   (any subset of the checks, by name; a
#                                                        name no check has is refused)
#
# The lent H200 image has torch, Triton, transformers, accelerate and imageio but not diffusers,
# trimesh, PyMCubes, xatlas, fast-simplification, inflect or kornia: `bash benchmarks/gpu_wheels.sh`
# downloads them here first into .whl/ (Python 3.12, manylinux x86_64, 15 MB), at this
# environment's versions; the device call then names .whl in its carry.
# Each check has its own timeout (SIGTERM, then SIGKILL 15 s later: the trainer saves a checkpoint
# on SIGTERM) and writes $OUT/<check>.log, each row printed as soon as it is measured. The default
# set's timeouts add up to 585 s: with the wheels' install that fits one 600 s device call only
# if the checks end before their limits (the limits are upper bounds, not estimates); run the
# optional ones in a second call. Results go to benchmarks/RESULTS.md by hand, with device and
# date. The old trainer figures in FACTS.md (26/38/52 GB) are nvidia-smi's, which count the CUDA
# context (~0.5-1 GB) that torch's "reserved" does not.
set -u
CHECKS=" ${*:-tests encoding sds_step trainer builtin} "
# A mistyped name would run nothing and still spend the device call: refuse it first.
KNOWN=$(sed -n 's/^check \([a-z0-9_]*\) .*/\1/p' "${BASH_SOURCE[0]}" | tr '\n' ' ')
for name in $CHECKS; do
    if [[ " $KNOWN" != *" $name "* ]]; then
        echo "gpu_session.sh: no check named '$name'; the checks are: ${KNOWN% }" >&2
        exit 2
    fi
done
OUT=${OUT:-/tmp/dreamtext-gpu}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
python3 - <<'PY' | tee "$OUT/environment.log"
import importlib, os, torch
from dreamtext.devices import ALLOCATOR_VARIABLES, use_expandable_segments
asked = use_expandable_segments()  # as `dreamtext` and sds_step.py do, before CUDA starts
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))
for name in ("triton", "diffusers", "transformers", "trimesh", "mcubes", "xatlas",
             "fast_simplification", "inflect", "kornia"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as error:  # report every missing wheel at once
        print(name, "MISSING", type(error).__name__)
try:
    probe = torch.empty(2**20, device="cuda")
    segments = torch.cuda.memory._snapshot()["segments"]
    expandable = [segment.get("is_expandable") for segment in segments]
except Exception as error:
    expandable = repr(error)
print("allocator", {n: os.environ.get(n) for n in ALLOCATOR_VARIABLES}, "set by dreamtext:",
      asked, "expandable segments:", expandable)
PY

check() {  # check NAME SECONDS COMMAND...   (skipped unless NAME is one of $CHECKS)
    local name=$1 seconds=$2
    shift 2
    [[ $CHECKS == *" $name "* ]] || return 0
    echo "== $name (timeout ${seconds}s)"
    timeout -k 15 "$seconds" "$@" >"$OUT/$name.log" 2>&1
    echo "exit $?" >>"$OUT/$name.log"
    tail -n 12 "$OUT/$name.log"
}

# 1. The Triton hash grid compiled for real, and the packed renderer's gradient tests on CUDA
#    (without -x: one run shows every failure).
check tests 100 python3 -m pytest -q -p no:cacheprovider \
    tests/test_encoding_backends.py tests/test_packed_rendering.py
# 2. Hash-grid backends: time and bytes kept per point.
check encoding 45 python3 benchmarks/encoding_speed.py --device cuda --points 262144 1048576
# 3. One SDS step with SD-2.1-base shapes (random weights), fp16, albedo and lambertian.
check sds_step 150 python3 benchmarks/sds_step.py --model sd21-random --precisions fp16 \
    --sizes 64 256 512 --shadings albedo lambertian --repeats 3 --warmup 2
# 4. The real trainer: it/s and peak reserved memory, default (64 px) and FitFusion (256 px),
#    albedo and shaded phases. 32 steps: the steady rate is taken over the second half (steps
#    18-32), which holds one occupancy-grid update (every 16 steps), as a user's run does. The
#    field's MLPs are compiled as a user's run compiles them (render.compile_field "auto", since
#    stop 53; the rows' "field MLPs" column says whether they were), the U-Net not.
check trainer 200 python3 benchmarks/sds_step.py --trainer --model sd21-random \
    --precisions fp16 --presets default fitfusion --steps 32
# 5. The built-in prior on CUDA (its image set follows the run's device), a resume on CUDA
#    (checkpoints load on the CPU first) and the export on CUDA (no turntable: the machine has
#    no ffmpeg); mesh.json says what the user's files hold. Each command prints its "phase
#    peaks" (benchmarks/phase_peaks.py): the steps', with the final preview, and the export's.
check builtin 90 bash -c 'set -ex
    run="python3 benchmarks/phase_peaks.py text \"a red cube\" --model builtin:shapes"
    run="$run --device cuda --workspace /tmp/dreamtext-builtin --no-export"
    eval "$run --iters 100 --overwrite"
    eval "$run --iters 150 --resume"
    python3 benchmarks/phase_peaks.py export --workspace /tmp/dreamtext-builtin --no-video \
        --device cuda
    cat /tmp/dreamtext-builtin/mesh/mesh.json'
# The trainer rows of the --compile checks below: both presets, fp16, 48 steps, the U-Net
# compiled; each check adds its --render and --guidance settings.
TRAINER_COMPILED="python3 benchmarks/sds_step.py --trainer --model sd21-random --precisions fp16
    --presets default fitfusion --steps 48 --compile"
# 6. Not in the default set (one command may run 600 s at most): the trainer as `dreamtext text
#    --compile` runs it since stop 55: the U-Net, the VAE encoder and the field's MLPs compiled,
#    the guidance replayed as CUDA graphs (stop 55's H200: 19.0 / 14.1 it/s at 64 px, 8.5 / 3.3
#    for FitFusion, on the fresh fog); compiling takes the first steps of the first row.
# shellcheck disable=SC2086
check compile 420 $TRAINER_COMPILED \
    --render '{"compile_field": true}' \
    --guidance '{"compile_vae": true, "compile_mode": "reduce-overhead"}'
# 6n. Not in the default set: check compile as `dreamtext text --compile` ran it before stop 55
#    (U-Net and field compiled, the guidance eager otherwise), on the same machine as checks
#    compile, trainer_vae and trainer_unet_graphs: stop 55's encoder-only rows (11.99 it/s at
#    64 px albedo) ran below stop 52's U-Net-only ones (16.84) on another H200.
# shellcheck disable=SC2086
check compile_unet 200 $TRAINER_COMPILED \
    --render '{"compile_field": true}'
# 6g. Not in the default set: the field's time per point eagerly and compiled (µs a point on the
#    H200: albedo 0.036 eagerly, 0.014 compiled; shaded 0.139 and 0.051), then the trainer rows
#    of check 4 with the field's MLPs eager (render.compile_field false, as before stop 53).
check field_compile 150 python3 benchmarks/field_cost.py --device cuda --points 1048576 \
    --mlp-precision fp16 --compile --field '{}' '{"density_head": "separate"}'
check trainer_eager 280 python3 benchmarks/sds_step.py --trainer --model sd21-random \
    --precisions fp16 --presets default fitfusion --steps 32 --render '{"compile_field": false}'
# 6a. Not in the default set: FitFusion's trainer rows of check 4 with torch's default CUDA
#    allocator (fixed-size segments) instead of the expandable segments `dreamtext` asks for
#    (devices.use_expandable_segments): what growing segments in place saves in peak reserved
#    memory when the number of samples changes every step, and what it costs in it/s.
check allocator 150 env PYTORCH_ALLOC_CONF=expandable_segments:False python3 \
    benchmarks/sds_step.py --trainer --model sd21-random --precisions fp16 --presets fitfusion \
    --steps 32
# 6b. Not in the default set: the trainer rows of check 4 held to 11 GiB, what a 12 GB card
#    leaves a run after its CUDA context and a desktop (sds_step.py --gpu-memory-gib): whether
#    the user's card runs them and how fast, with expandable segments (card12) and with torch's
#    default allocator (card12_fixed), which near the limit frees its cache and retries.
check card12 200 python3 benchmarks/sds_step.py --trainer --model sd21-random \
    --precisions fp16 --presets default fitfusion --steps 32 --gpu-memory-gib 11
check card12_fixed 200 env PYTORCH_ALLOC_CONF=expandable_segments:False python3 \
    benchmarks/sds_step.py --trainer --model sd21-random --precisions fp16 \
    --presets default fitfusion --steps 32 --gpu-memory-gib 11
# 6c. Not in the default set: the real trainer at 512 px (FitFusion's settings otherwise), for
#    the issue's "512 px: peak <= 12 GB" as a run holds it (check 3 has the step alone).
check trainer512 200 python3 benchmarks/sds_step.py --trainer --model sd21-random \
    --precisions fp16 --presets fitfusion --px 512 --steps 32
# 6d. Not in the default set: the trainer rows of check 4 with the density head of its own
#    (FitFusion's shaded phase 1.63 -> 3.15 it/s on the H200, RESULTS.md 2026-12-04), and in
#    bf16 (no loss scaler: the fp16 rows' 12-16 skipped updates are its calibration from 2^16).
check trainer_separate 200 python3 benchmarks/sds_step.py --trainer --model sd21-random \
    --precisions fp16 --presets default fitfusion --steps 32 --density-head separate
check trainer_bf16 200 python3 benchmarks/sds_step.py --trainer --model sd21-random \
    --precisions bf16 --presets default fitfusion --steps 32
# 6e. Not in the default set: the trainer at 512 px as `dreamtext text --compile` runs it, held
#    to 11 GiB (a 12 GB card): since 2^25 (render.grad_chunk_points) a 512 px albedo step no
#    longer defers its backprop (~18.6 M queries), and a shaded one defers in chunks 8x as
#    large as at 2^22 (at 256 px the direct step peaked lower than the deferred one, 4.9 against
#    5.1 GiB eagerly: RESULTS.md, 2026-12-04). The 512 px peaks with the new default are not
#    measured yet (the eager ones of check trainer512: 6.0 / 5.8 GiB at 2^22).
check trainer512_compile 240 python3 benchmarks/sds_step.py --trainer --model sd21-random \
    --precisions fp16 --presets fitfusion --px 512 --steps 32 --compile \
    --render '{"compile_field": true}' --gpu-memory-gib 11 \
    --guidance '{"compile_vae": true, "compile_mode": "reduce-overhead"}'
# 6f. Not in the default set: the trainer rows of check 4 with the marcher's rounds of a fixed
#    16 steps (render.march_window_growth 1, as before stop 51) instead of rounds that double.
#    A round waits for the GPU twice: under virtual CUDA a fresh field's 64 px step marched 14-16
#    rounds fixed and 4-5 doubling (33-34 syncs -> 10-12; RESULTS.md, stop 51); the H200 rows of
#    check 4 (2026-12-04) were taken with the fixed rounds. What the doubling buys in it/s.
check trainer_window 200 python3 benchmarks/sds_step.py --trainer --model sd21-random \
    --precisions fp16 --presets default fitfusion --steps 32 --render '{"march_window_growth": 1}'
# 6h. Not in the default set: where a step's time goes, by phase and by operator (self device
#    time a step, kernels a step; benchmarks/step_profile.py): FitFusion's shaded 256 px step
#    eagerly and compiled (3.64 it/s in the trainer with --compile, of which the field's samples
#    are ~220 ms by field_cost.py: the rest is this check's question), and the compiled 64 px
#    albedo and shaded steps (16.8 and 13.0 it/s: the guidance's share, and what the shaded
#    step's ~7 ms more than its samples' field work is: RESULTS.md, stop 54).
check profile 300 bash -c 'set -e
    python3 benchmarks/step_profile.py --size 256 --shading lambertian
    python3 benchmarks/step_profile.py --size 256 --shading lambertian --compile
    python3 benchmarks/step_profile.py --size 64 --shading albedo --compile
    python3 benchmarks/step_profile.py --size 64 --shading lambertian --compile'
# 6i. Not in the default set: the SDS step of a field like a trained run's, not the fresh fog
#    (sds_step.py --fitted: the default field fitted to a sphere on the GPU, seconds, then its
#    occupancy grid): FitFusion's shaded phase starts after 1,000 albedo steps, and on the CPU
#    the fitted sphere kept 8 samples a ray at 256 px where the fresh field keeps ~66 on the
#    H200. The field's MLPs compile as render.compile_field "auto" does.
check fitted 420 python3 benchmarks/sds_step.py --model sd21-random --precisions fp16 \
    --sizes 64 256 --shadings albedo lambertian --fitted sphere --repeats 5 --warmup 3
# 6j. Not in the default set: the SDS step with cuDNN's autotuner on (sds_step.py
#    --cudnn-benchmark) beside check 3's rows without it. The VAE's forward and backward at a
#    fixed 512 px are 58% of a guidance call's work (benchmarks/guidance_cost.py), and with a
#    trained field the guidance is most of a step.
check cudnn 200 python3 benchmarks/sds_step.py --model sd21-random --precisions fp16 \
    --sizes 64 256 --shadings albedo --repeats 5 --warmup 3 --cudnn-benchmark
# 6k. Not in the default set: the guidance's VAE encoder compiled (guidance.compile_vae, new in
#    stop 54, never run on a GPU), then U-Net and encoder replayed as CUDA graphs
#    (guidance.compile_mode reduce-overhead). The encoder's forward and backward at 512 px are
#    58% of a guidance call's work in 248 ops, and --compile leaves them eager; the U-Net's
#    ~900 kernels a call are launched one by one even compiled. Single SDS steps (the guidance
#    ms column is the answer), each compiled row's compile in its warm-up steps, then the
#    trainer at 64 px (the 20 it/s target) and FitFusion with the encoder compiled.
check vae_compile 300 bash -c 'set -e
    python3 benchmarks/sds_step.py --model sd21-random --precisions fp16 --sizes 64 256 \
        --shadings albedo --repeats 5 --warmup 3 --compile
    python3 benchmarks/sds_step.py --model sd21-random --precisions fp16 --sizes 64 256 \
        --shadings albedo --repeats 5 --warmup 3 --compile --guidance "{\"compile_vae\": true}"'
check cudagraphs 330 bash -c 'set -e
    python3 benchmarks/sds_step.py --model sd21-random --precisions fp16 --sizes 64 256 \
        --shadings albedo --repeats 5 --warmup 4 --compile \
        --guidance "{\"compile_mode\": \"reduce-overhead\"}"
    python3 benchmarks/sds_step.py --model sd21-random --precisions fp16 --sizes 64 256 \
        --shadings albedo --repeats 5 --warmup 4 --compile \
        --guidance "{\"compile_vae\": true, \"compile_mode\": \"reduce-overhead\"}"'
# shellcheck disable=SC2086
check trainer_vae 300 $TRAINER_COMPILED \
    --render '{"compile_field": true}' --guidance '{"compile_vae": true}'
# 6l. Not in the default set: the SDS step of check fitted as `dreamtext text --compile` ran it
#    before stop 55 (U-Net and field compiled), then with the guidance's VAE encoder compiled too
#    (guidance.compile_vae), then with U-Net and encoder replayed as CUDA graphs
#    (guidance.compile_mode reduce-overhead): a trained field's step, which the guidance decides
#    (64 px target 20 it/s; FitFusion's shaded phase 8 it/s). One process each, so that a
#    setting that fails on this machine leaves the others' rows; the second and third find the
#    fitted field, the saved model and Inductor's cache of the U-Net that the first left.
FITTED_COMPILED="python3 benchmarks/sds_step.py --model sd21-random --precisions fp16 --sizes 64 256
    --shadings albedo lambertian --fitted sphere --repeats 5 --warmup 4 --compile"
# shellcheck disable=SC2086  # the command line is meant to split into arguments
check fitted_compile 190 $FITTED_COMPILED
# shellcheck disable=SC2086
check fitted_vae 170 $FITTED_COMPILED --guidance '{"compile_vae": true}'
# shellcheck disable=SC2086
check fitted_graphs 200 $FITTED_COMPILED \
    --guidance '{"compile_vae": true, "compile_mode": "reduce-overhead"}'
# 6m. Not in the default set: `--compile` with the U-Net alone recorded as CUDA graphs and the
#    encoder compiled without them (guidance.compile_vae_mode default, new in stop 55, not run
#    on a GPU): the graphs' pool added 1.2-1.4 GiB reserved in stop 55's trainer rows (64 px
#    5.0 GiB, over the target's 5 GB), most of it likely the encoder's activations kept for its
#    backward (1,586 MiB at 512 px, guidance_cost.py); the U-Net's forward keeps none. Its
#    single steps beside check fitted_graphs' (40 / 45 ms at 64 px, 66 / 120 at 256), its
#    trainer rows beside check compile's.
# shellcheck disable=SC2086
check fitted_unet_graphs 170 $FITTED_COMPILED --guidance \
    '{"compile_vae": true, "compile_mode": "reduce-overhead", "compile_vae_mode": "default"}'
# shellcheck disable=SC2086
check trainer_unet_graphs 200 $TRAINER_COMPILED \
    --render '{"compile_field": true}' --guidance \
    '{"compile_vae": true, "compile_mode": "reduce-overhead", "compile_vae_mode": "default"}'
# 6v. Not in the default set: guidance.vae_checkpointing (new in stop 56, not run on a GPU): the
#    SDS encode keeps its blocks' inputs and recomputes one ResNet block at a time in backward.
#    On the CPU (bf16, benchmarks/encoder_memory.py) it took the encode's peak from 1,523 to 642
#    MiB eagerly and from 1,130 to 515 MiB compiled. If the CUDA graphs' pool shrinks by as much
#    (~0.6 GiB), --compile's 64 px trainer (5,020-5,106 MiB reserved in stop 55) comes under the
#    target's 5 GB (4,768 MiB): a prediction. The encode alone first (eager and compiled, peak and ms), then
#    check fitted_graphs' and check compile's rows with it, for their time and memory.
check encoder_memory 240 bash -c 'python3 benchmarks/encoder_memory.py --device cuda \
    --dtype fp16 --render 64 --repeats 5 && python3 benchmarks/encoder_memory.py \
    --device cuda --dtype fp16 --render 64 --repeats 5 --compile'
# shellcheck disable=SC2086
check fitted_vae_ckpt 200 $FITTED_COMPILED --guidance \
    '{"compile_vae": true, "compile_mode": "reduce-overhead", "vae_checkpointing": true}'
# shellcheck disable=SC2086
check trainer_vae_ckpt 200 $TRAINER_COMPILED \
    --render '{"compile_field": true}' --guidance \
    '{"compile_vae": true, "compile_mode": "reduce-overhead", "vae_checkpointing": true}'
# 6f. Not in the default set: check compile's trainer rows (`dreamtext text --compile`) with the
#    field fitted to a sphere at step 0 and kept so (learning rate 0: the random model's guidance
#    would fog it again; sds_step.py fields_starting_from), as a trained run's later steps are:
#    stop 55's fresh fog kept 62-71 samples a ray (19.0 / 14.1 it/s at 64 px, 8.5 / 3.3 for
#    FitFusion), the fitted field's single steps 13-16 (24.8 / 22.3 and 15.1 / 8.3 it/s). So the
#    issue's trainer targets (64 px 20 it/s, FitFusion shaded 8 it/s) against the trainer's own
#    overheads (logging, the occupancy grid's refresh every 16 steps, the fp16 scaler), not a
#    single step's. The sphere is fitted on the GPU first (800 steps, cached beside the model).
#    Then the same with guidance.vae_checkpointing (check trainer_vae_ckpt's setting): whether
#    the fitted trainer keeps 64 px at 20 it/s within 5 GB (4,768 MiB) with it, which decides
#    whether --compile takes it. The second finds the fit and Inductor's caches the first left.
TRAINER_FITTED="$TRAINER_COMPILED --fitted sphere"
# shellcheck disable=SC2086
check trainer_fitted 300 $TRAINER_FITTED --render '{"compile_field": true}' \
    --guidance '{"compile_vae": true, "compile_mode": "reduce-overhead"}'
# shellcheck disable=SC2086
check trainer_fitted_ckpt 240 $TRAINER_FITTED --render '{"compile_field": true}' --guidance \
    '{"compile_vae": true, "compile_mode": "reduce-overhead", "vae_checkpointing": true}'
# 7. Not in the default set: the shaded SDS step with analytic normals (σ, albedo and normals
#    from one grid lookup with its Jacobian, where forward differences look up four points; on 2
#    CPU cores 15-25% faster, ~10% more peak memory) beside forward differences (check 3), to
#    choose the GPU's default.
check normals 120 python3 benchmarks/sds_step.py --model sd21-random --precisions fp16 \
    --sizes 64 256 --shadings lambertian --normals analytic --repeats 3 --warmup 2
# 8. Not in the default set: the field with a density head of its own (field.density_head:
#    separate), forward differences and analytic normals, albedo and lambertian; on 2 CPU cores
#    its shaded step took 2.4x / 1.5x its albedo one against 3.3x with the shared MLP.
check separate 150 python3 benchmarks/sds_step.py --model sd21-random --precisions fp16 \
    --sizes 64 256 --shadings albedo lambertian --density-head separate --repeats 3 --warmup 2
check separate_analytic 150 python3 benchmarks/sds_step.py --model sd21-random \
    --precisions fp16 --sizes 64 256 --shadings lambertian --density-head separate \
    --normals analytic --repeats 3 --warmup 2
# 9. Not in the default set: what the field costs per sample on the GPU, albedo against shaded,
#    for each normal method and density head (benchmarks/field_cost.py; on 2 CPU cores the default
#    field's shaded sample is 4.0x its albedo one, and a step's ratio is (F_s + r) / (F_a + r)).
check field_cost 90 python3 benchmarks/field_cost.py --device cuda --points 1048576 \
    --mlp-precision fp16 --field \
    '{}' '{"normals": "analytic"}' '{"density_head": "separate"}' \
    '{"density_head": "separate", "normals": "analytic"}'
# 10. Not in the default set: `dreamtext image`'s descriptor training (eq. 5.4 through the U-Net),
#    step time and peak memory in fp16 and fp32; benchmarks/memory_model.py --descriptor predicts
#    3.1 GB allocated in fp16 (RESULTS.md).
check descriptor 150 python3 benchmarks/sds_step.py --descriptor --model sd21-random \
    --precisions fp16 fp32 --repeats 5 --warmup 2
# 11. Not in the default set: the whole test suite on the GPU machine. Every test that leaves the
#     device at auto (the trainer, resume, batch, image->3D with its descriptor, export) runs on
#     CUDA there: the only run of those paths short of a user's. Expect the browser, glTF
#     validator and tiny-cuda-nn tests to skip (not on that machine), tests that write the
#     turntable's mp4 to fail (no imageio-ffmpeg there: its wheel is over the transfer limit),
#     and tests that compare two runs bit for bit to be able to differ in the last bits on CUDA
#     (its atomic adds). In one process the suite takes ~26 min of one core here (loaded; CI's idle
#     run in 2 workers: 6:52)
#     (benchmarks/RESULTS.md, 2026-12-03; conftest pins torch to one thread), far over a device
#     call, so it runs in 12 pytest-xdist workers (the H200 image has pytest-xdist and execnet;
#     4 of its 16 cores stay for the CLI tests' child processes): ~130 s of work each,
#     plus CUDA's start in every worker and CLI child (~3 s each) and Triton compiling its
#     kernels in every worker instead of the interpreter, with the slowest single tests (the
#     virtual-CUDA CLI runs, 1-2 min here) at the tail. 540 s leaves the wheels' install its 15 s
#     of one 600 s call: run it alone, `bash benchmarks/gpu_session.sh suite`.
check suite 540 python3 -m pytest -q -p no:cacheprovider -rfE --durations=15 -n 12 \
    --dist worksteal
# 12. Not in the default set: the host syncs of real trainer steps (default 64 px and FitFusion
#     256 px, albedo and lambertian, grid all-occupied and refreshed; the built-in prior, the
#     default field on the torch hash grid and the occupancy marcher, as the virtual-CUDA counts
#     of benchmarks/host_syncs.py), each after 3 warm-up steps, under torch's sync debug mode:
#     one row per dreamtext line that made the host wait in a step, with its text, to hold
#     against the virtual counts (RESULTS.md, "Host syncs ... (2026-12-04, branch syncs9)":
#     14-34 a 64 px step with fixed rounds; stop 51's doubling rounds: 8-12) and to see that
#     the marcher's nonzero_static lines are not among them.
check syncdebug 300 python3 benchmarks/host_syncs.py --device cuda --sync-debug --warmup 3 \
    --steps 2
# 13. Not in the default set (its 360 s and the default's 585 s are two device calls; run as
#     `tests encoding paths`, 505 s, one call leaves out sds_step and trainer, whose H200 rows
#     stop 55 took, and builtin, whose prior on CUDA and resume this runs, not its export): the
#     CUDA code paths that have never run on a GPU (benchmarks/gpu_paths.py), each once with the
#     smallest settings, each in a process group of its own with its own time limit (their
#     limits and the tiny models' add up to 345 s), each ending in one line 'PATH ok|FAIL <why>'
#     (or 'skip'), so a run cut short still tells which passed; each path's output goes to
#     $OUT/paths_<path>.log. Adan on CUDA; the field memory check's CUDA branch; the weights
#     check at saves; checkpoints saved straight from CUDA tensors; memory that runs out while
#     torch.compile builds; the Triton grid's fallback line; the descriptor's per-step vector
#     bound and its fp16 skip window (GradScaler("cuda")); --fp32 over a run recorded in fp16;
#     the built-in prior on --device cuda. `DREAMTEXT_PATHS_DEVICE=cpu python3
#     benchmarks/gpu_paths.py` runs those that run on a CPU (tests/test_gpu_paths.py).
check paths 360 python3 benchmarks/gpu_paths.py --logs "$OUT"
