"""Arm CPU names from /proc/cpuinfo's implementer/part codes (Arm kernels print no "model name")."""
from __future__ import annotations

from pathlib import Path

from edgellm.devices.arm_parts import arm_cpu_name, core_name
from edgellm.devices.cpu import detect_cpu, parse_cpuinfo

_A76 = """processor\t: {n}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1
"""
# Raspberry Pi 5 (Raspberry Pi OS, 64-bit kernel): four Cortex-A76, the board on a trailing "Model" line
PI5 = "\n".join(_A76.format(n=n) for n in range(4)) + """
Revision\t: d04170
Serial\t\t: 1a2b3c4d5e6f7a8b
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""

_CORE = """processor\t: {n}
BogoMIPS\t: 38.40
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: {variant}
CPU part\t: {part}
CPU revision\t: 0
"""
# a mid-range Android phone (older vendor kernel): 6 little Cortex-A55 listed first, then 2 big Cortex-A78,
# a "Processor" headline and the SoC on a "Hardware" line
PHONE = ("Processor\t: AArch64 Processor rev 0 (aarch64)\n"
         + "\n".join(_CORE.format(n=n, variant="0x2", part="0xd05") for n in range(6)) + "\n"
         + "\n".join(_CORE.format(n=n, variant="0x1", part="0xd41") for n in range(6, 8))
         + "\nHardware\t: Qualcomm Technologies, Inc SM7325\n")


def test_raspberry_pi_5_is_named_from_its_part_codes() -> None:
    model, isa, physical, logical = parse_cpuinfo(PI5)
    assert model == "4x Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0)"
    assert logical == physical == 4 and {"neon", "dotprod", "fp16"} <= set(isa)


def test_big_little_phone_names_the_big_cores_first_and_counts_each_kind() -> None:
    model, _, _, logical = parse_cpuinfo(PHONE)
    assert model == "2x Cortex-A78 + 6x Cortex-A55 (Qualcomm Technologies, Inc SM7325)"
    assert logical == 8   # the "Processor : AArch64 ..." headline is not a core


def test_core_names_from_the_table_and_unknown_codes_kept() -> None:
    assert [core_name(0x41, p) for p in (0xD03, 0xD05, 0xD08, 0xD0B, 0xD41, 0xD44)] == [
        "Cortex-A53", "Cortex-A55", "Cortex-A72", "Cortex-A76", "Cortex-A78", "Cortex-X1"]
    assert [core_name(0x41, p) for p in (0xD0C, 0xD40, 0xD49)] == ["Neoverse N1", "Neoverse V1", "Neoverse N2"]
    assert core_name(0x51, 0x804) == "Kryo 4xx Gold" and core_name(0x61, 0x023) == "M1 Firestorm"
    assert core_name(0x41, 0xD99) == "Arm part 0xd99" and core_name(0x99, 0x1) == "implementer 0x99 part 0x001"


def test_x86_text_and_text_without_codes_are_not_arm() -> None:
    x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 17\nmodel name\t: AMD EPYC 7B13\nflags\t: avx2\n"
    assert arm_cpu_name(x86) is None
    assert parse_cpuinfo(x86)[0] == "AMD EPYC 7B13"   # x86's numeric "model" is not a board name
    assert arm_cpu_name("processor\t: 0\nFeatures\t: fp asimd\n") is None


def test_detect_cpu_reads_an_arm_proc_tree(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cpuinfo").write_text(PHONE)
    (proc / "meminfo").write_text("MemTotal: 8000000 kB\nMemAvailable: 5000000 kB\n")
    info = detect_cpu(proc_root=proc, sys_root=tmp_path / "sys", cgroup_root=tmp_path / "cg")
    assert info.model.startswith("2x Cortex-A78 + 6x Cortex-A55") and info.arch == "aarch64"
    assert info.model != "unknown"
