"""The int8 kernel path stated for a CPU: known answers for the CPU kinds this project runs on."""

from squeezebench.hardware.cpu import has_vnni, ort_int8_kernel

AVX2_ONLY = ["avx2", "f16c", "fma"]
VNNI = ["avx2", "avx512f", "avx512_vnni", "fma"]
DYNAMIC_8BIT = {"weight_type": "QInt8", "reduce_range": False}
DYNAMIC_7BIT = {"weight_type": "QInt8", "reduce_range": True}


def test_vnni_is_told_apart_from_avx2_only():
    assert has_vnni(VNNI) and has_vnni(["avx2", "avx_vnni"]) and not has_vnni(AVX2_ONLY)


def test_u8s8_with_8_bit_weights_on_avx2_is_named_as_saturating():
    assert "can saturate" in ort_int8_kernel(DYNAMIC_8BIT, AVX2_ONLY)
    assert "no saturation" in ort_int8_kernel(DYNAMIC_7BIT, AVX2_ONLY)
    assert ort_int8_kernel(DYNAMIC_8BIT, VNNI).startswith("u8s8 on AVX-512/AVX VNNI")


def test_uint8_weights_and_static_settings():
    assert ort_int8_kernel({"weight_type": "QUInt8"}, AVX2_ONLY).startswith("u8u8 on AVX2")
    static = {"weight_type": "QInt8", "activation_type": "QInt8", "reduce_range": True}
    assert ort_int8_kernel(static, AVX2_ONLY).startswith("s8s8")
    assert "SSE" in ort_int8_kernel(DYNAMIC_7BIT, [])
