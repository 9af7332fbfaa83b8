import pytest

from bmd.training import precision
from bmd.training.precision import cpu_has_native_bf16, resolve_precision

AMX = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
AVX512 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16\n"


def test_native_bf16_needs_amx_not_just_avx512_bf16():
    assert cpu_has_native_bf16(AMX)
    assert not cpu_has_native_bf16(AVX512)
    assert not cpu_has_native_bf16("no flags line here")


def test_auto_resolves_to_bf16_on_gpu_or_amx_cpu_and_fp32_elsewhere(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", cuda=True) == "bf16"
    assert resolve_precision("auto", cuda=False) == "fp32"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", cuda=False) == "bf16"
    # an explicit choice is kept whatever the hardware
    assert resolve_precision("fp32", cuda=True) == "fp32"
    assert resolve_precision("bf16", cuda=False) == "bf16"


def test_unknown_precision_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="fp16.*auto, fp32, bf16"):
        resolve_precision("fp16", cuda=False)
