"""The Triton kernels compile for the GPUs the check targets (sm_90: H100/H200) on a machine without one:
Triton's own compiler and its bundled ptxas, ahead of time. The interpreter tests check numerics only;
this catches what only the real compiler rejects, and register spills at the `small` preset's shapes."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# Runs in a fresh process without TRITON_INTERPRET (this directory's conftest sets it), so that the
# module's kernels are real JITFunctions. Prints "name SPILL_BYTES" (stack + local memory) per kernel.
SCRIPT = textwrap.dedent(
    """
    import os, subprocess, sys, tempfile
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from workloads.kernels.l3_lookup import triton as L, triton_kernels as K

    def types(dt, table_grad):
        p = "*" + dt
        return dict(q_ptr=p, keys_ptr=p, values_ptr=p, out_ptr=p, g_ptr=p, dq_ptr=p, dk_ptr=table_grad,
                    dv_ptr=table_grad, ids_ptr="*i64", offsets_ptr="*i64", sorted_ids_ptr="*i64",
                    perm_ptr="*i64", group_end_ptr="*i64", lse_ptr="*fp32", delta_ptr="*fp32",
                    DIM="i32", EMB="i32", N="i32")

    # The tile sizes and warps the launcher picks at the `small` preset's L3 widths (dim 512, d_emb 256;
    # tied: 512), forward/dq and table backward.
    fwd = L._Blocks(512, 256, L._FWD_TILE_ELEMS).kwargs()
    bwd = L._Blocks(512, 256, L._BWD_TILE_ELEMS).kwargs()
    bwd_tied = L._Blocks(512, 512, L._BWD_TILE_ELEMS).kwargs()
    jobs = [
        (K.lookup_fwd_kernel, types("fp32", "*fp32"), fwd),
        (K.lookup_fwd_kernel, types("bf16", "*bf16"), fwd),
        (K.lookup_bwd_dq_kernel, types("bf16", "*bf16"), fwd),
        (K.lookup_bwd_tables_kernel, types("fp32", "*fp32"), dict(bwd, TIED=False, SPLIT=16)),
        (K.lookup_bwd_tables_kernel, types("bf16", "*bf16"), dict(bwd_tied, TIED=True, SPLIT=16)),
        (K.lookup_bwd_tables_atomic_kernel, types("bf16", "*fp32"), dict(bwd, TIED=False, SPLIT=16)),
    ]
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    for fn, sig, consts in jobs:
        consts = dict(consts)
        options = {"num_warps": consts.pop("num_warps")}
        names = list(fn.arg_names)
        src = ASTSource(fn=fn, signature={n: sig.get(n, "constexpr") for n in names},
                        constexprs={(names.index(k),): v for k, v in consts.items()})
        kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(kernel.asm["cubin"])
            f.flush()
            usage = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True,
                                   text=True, check=True).stdout
        fields = dict(w.split(":", 1) for w in usage.split() if w.startswith(("STACK:", "LOCAL:")))
        print(fn.__name__, int(fields["STACK"]) + int(fields["LOCAL"]))
    """
)


def test_kernels_compile_for_sm90_without_register_spills():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(PYTHONPATH=str(ROOT), TRITON_DEFAULT_FP_FUSION="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line.split() for line in proc.stdout.splitlines()]
    assert len(lines) == 6
    assert all(spilled == "0" for _, spilled in lines), proc.stdout  # stack/local memory = register spills
