"""bench/machine.py names each CPU flag that decides bf16 speed, present or absent, beside every speed figure."""

from bench.machine import cpu_flags

CPUINFO = """processor\t: 0
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni
processor\t: 1
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni
"""


def test_flags_present_and_absent_are_both_named(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    assert cpu_flags(path) == "avx2 avx512f, no avx512_bf16, no amx_bf16"
    path.write_text(CPUINFO.replace("avx512_vnni", "avx512_vnni avx512_bf16 amx_bf16"))
    assert cpu_flags(path) == "avx2 avx512f avx512_bf16 amx_bf16"


def test_a_flag_is_matched_whole_and_a_missing_file_says_unknown(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("flags\t\t: avx2_like avx512f_x\n")
    assert cpu_flags(path) == "no avx2, no avx512f, no avx512_bf16, no amx_bf16"
    assert "unknown" in cpu_flags(tmp_path / "missing")
