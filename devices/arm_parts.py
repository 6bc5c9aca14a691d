"""Arm CPU names from /proc/cpuinfo's `CPU implementer` / `CPU part` fields (Arm kernels print no model name).

Data only: (implementer, part) -> core name, from the Linux kernel's arch/arm64/include/asm/cputype.h and
util-linux's lscpu-arm.c. A big.LITTLE SoC lists each core with its own part, so the name counts them:
"2x Cortex-A78 + 6x Cortex-A55".
"""
from __future__ import annotations

from collections import Counter

# CPU implementer code -> vendor
IMPLEMENTERS: dict[int, str] = {
    0x41: "Arm", 0x42: "Broadcom", 0x43: "Cavium", 0x46: "Fujitsu", 0x48: "HiSilicon", 0x4E: "NVIDIA",
    0x51: "Qualcomm", 0x53: "Samsung", 0x61: "Apple", 0x6D: "Microsoft", 0xC0: "Ampere",
}

# (implementer, part) -> core name
PARTS: dict[tuple[int, int], str] = {
    # Arm Ltd. cores (implementer 0x41)
    (0x41, 0xD03): "Cortex-A53", (0x41, 0xD04): "Cortex-A35", (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD07): "Cortex-A57", (0x41, 0xD08): "Cortex-A72", (0x41, 0xD09): "Cortex-A73",
    (0x41, 0xD0A): "Cortex-A75", (0x41, 0xD0B): "Cortex-A76", (0x41, 0xD0C): "Neoverse N1",
    (0x41, 0xD0D): "Cortex-A77", (0x41, 0xD0E): "Cortex-A76AE", (0x41, 0xD40): "Neoverse V1",
    (0x41, 0xD41): "Cortex-A78", (0x41, 0xD42): "Cortex-A78AE", (0x41, 0xD44): "Cortex-X1",
    (0x41, 0xD46): "Cortex-A510", (0x41, 0xD47): "Cortex-A710", (0x41, 0xD48): "Cortex-X2",
    (0x41, 0xD49): "Neoverse N2", (0x41, 0xD4A): "Neoverse E1", (0x41, 0xD4B): "Cortex-A78C",
    (0x41, 0xD4C): "Cortex-X1C", (0x41, 0xD4D): "Cortex-A715", (0x41, 0xD4E): "Cortex-X3",
    (0x41, 0xD4F): "Neoverse V2", (0x41, 0xD80): "Cortex-A520", (0x41, 0xD81): "Cortex-A720",
    (0x41, 0xD82): "Cortex-X4", (0x41, 0xD84): "Neoverse V3", (0x41, 0xD85): "Cortex-X925",
    (0x41, 0xD87): "Cortex-A725", (0x41, 0xD8E): "Neoverse N3",
    # Qualcomm Kryo (0x51): the semi-custom cores report Qualcomm parts; later Kryo cores report Arm's parts
    (0x51, 0x800): "Kryo 2xx Gold", (0x51, 0x801): "Kryo 2xx Silver", (0x51, 0x802): "Kryo 3xx Gold",
    (0x51, 0x803): "Kryo 3xx Silver", (0x51, 0x804): "Kryo 4xx Gold", (0x51, 0x805): "Kryo 4xx Silver",
    (0x51, 0xC00): "Falkor", (0x51, 0xC01): "Saphira", (0x51, 0x001): "Oryon",
    # Apple (0x61), as Linux on Apple silicon reports them
    (0x61, 0x022): "M1 Icestorm", (0x61, 0x023): "M1 Firestorm", (0x61, 0x024): "M1 Pro Icestorm",
    (0x61, 0x025): "M1 Pro Firestorm", (0x61, 0x028): "M1 Max Icestorm", (0x61, 0x029): "M1 Max Firestorm",
    (0x61, 0x032): "M2 Blizzard", (0x61, 0x033): "M2 Avalanche",
    # others
    (0x48, 0xD01): "TaiShan v110 (Kunpeng 920)", (0x4E, 0x004): "Carmel", (0x46, 0x001): "A64FX",
    (0xC0, 0xAC3): "Ampere-1", (0xC0, 0xAC4): "Ampere-1a", (0x43, 0x0AF): "ThunderX2",
    (0x53, 0x001): "Exynos M1", (0x53, 0x002): "Exynos M3", (0x53, 0x003): "Exynos M4", (0x53, 0x004): "Exynos M5",
}


def core_name(implementer: int, part: int) -> str:
    """'Cortex-A76' for (0x41, 0xd0b); an unknown part keeps its codes: 'Arm part 0xd99'."""
    name = PARTS.get((implementer, part))
    if name is not None:
        return name
    vendor = IMPLEMENTERS.get(implementer, f"implementer {implementer:#04x}")
    return f"{vendor} part {part:#05x}"


def _hex(value: str) -> int | None:
    try:
        return int(value.strip(), 0)
    except ValueError:
        return None


def arm_cpu_name(cpuinfo: str) -> str | None:
    """The CPU of an Arm /proc/cpuinfo text from each processor's implementer and part: '4x Cortex-A76',
    '2x Cortex-A78 + 6x Cortex-A55' (the cores listed last, the big ones on big.LITTLE SoCs, named first); None
    when the text has no such fields. A processor block without its own fields takes the previous block's."""
    cores: list[tuple[int, int]] = []
    implementer = part = None
    pending = False
    for line in cpuinfo.splitlines() + ["processor : end"]:
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "processor" and (value.strip().isdigit() or value.strip() == "end"):
            if pending and implementer is not None and part is not None:
                cores.append((implementer, part))
            pending = True
        elif key == "cpu implementer":
            implementer = _hex(value)
        elif key == "cpu part":
            part = _hex(value)
    if implementer is not None and part is not None and not cores:   # fields without processor lines
        cores.append((implementer, part))
    if not cores:
        return None
    counts = Counter(cores)
    # the big cores are listed last on big.LITTLE SoCs; name them first
    order = sorted(counts, key=lambda c: -max(i for i, x in enumerate(cores) if x == c))
    return " + ".join(f"{counts[c]}x {core_name(*c)}" for c in order)
