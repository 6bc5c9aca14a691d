"""Helpers for driving a Tk window under Xvfb: start a server on a free display, xdotool, the window manager's
close request (WM_DELETE_WINDOW, sent through libX11 with ctypes because there is no window manager), and an
XWD screenshot written as PNG with the standard library only."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path


def available() -> str | None:
    """None when Xvfb, xdotool and libX11 are all here, else what is missing (xwd, for screenshots, is optional:
    see `can_screenshot`)."""
    missing = [tool for tool in ("Xvfb", "xdotool") if shutil.which(tool) is None]
    if ctypes.util.find_library("X11") is None:
        missing.append("libX11")
    return ", ".join(missing) or None


def can_screenshot() -> bool:
    return shutil.which("xwd") is not None   # Debian: x11-apps


class Xvfb:
    def __init__(self, width: int = 1024, height: int = 700) -> None:
        read, write = os.pipe()
        self.proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", f"{width}x{height}x24",
                                      "-nolisten", "tcp"], pass_fds=(write,), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(write)
        number = b""
        with os.fdopen(read, "rb") as pipe:   # Xvfb picks a free display and writes its number here
            while not number.endswith(b"\n"):
                byte = pipe.read(1)
                if not byte:
                    raise RuntimeError("Xvfb exited before it chose a display")
                number += byte
        self.display = f":{int(number)}"
        self.env = {**os.environ, "DISPLAY": self.display}

    def xdotool(self, *args: str, timeout: float = 30) -> str:
        return subprocess.run(["xdotool", *args], env=self.env, capture_output=True, text=True, check=True,
                              timeout=timeout).stdout

    def find_window(self, name: str, timeout: float = 120) -> list[str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = subprocess.run(["xdotool", "search", "--name", name], env=self.env, capture_output=True,
                                   text=True).stdout.split()
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"no window named {name!r} appeared")

    def request_close(self, window: str) -> None:
        """What a window manager sends when the user clicks the close button."""
        x11 = ctypes.CDLL(ctypes.util.find_library("X11"))
        x11.XOpenDisplay.restype = ctypes.c_void_p
        x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        x11.XInternAtom.restype = ctypes.c_ulong
        x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        x11.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        x11.XFlush.argtypes = [ctypes.c_void_p]
        x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
        dpy = x11.XOpenDisplay(self.display.encode())
        if not dpy:
            raise RuntimeError(f"cannot open {self.display}")

        class ClientMessage(ctypes.Structure):   # XClientMessageEvent, padded to sizeof(XEvent)
            _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                        ("display", ctypes.c_void_p), ("window", ctypes.c_ulong), ("message_type", ctypes.c_ulong),
                        ("format", ctypes.c_int), ("data", ctypes.c_long * 5), ("pad", ctypes.c_long * 12)]

        event = ClientMessage(type=33, send_event=1, display=dpy, window=int(window),   # 33: ClientMessage
                              message_type=x11.XInternAtom(dpy, b"WM_PROTOCOLS", 0), format=32)
        event.data[0] = x11.XInternAtom(dpy, b"WM_DELETE_WINDOW", 0)
        x11.XSendEvent(dpy, int(window), 0, 0, ctypes.byref(event))
        x11.XFlush(dpy)
        x11.XCloseDisplay(dpy)

    def screenshot(self, out: Path) -> None:
        """The whole screen as a PNG (written to a temp name, then renamed)."""
        xwd = subprocess.run(["xwd", "-root", "-silent"], env=self.env, capture_output=True, check=True).stdout
        tmp = out.with_suffix(".png.tmp")
        tmp.write_bytes(xwd_to_png(xwd))
        tmp.replace(out)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def xwd_to_png(data: bytes) -> bytes:
    """A 24/32-bit TrueColor XWD (what `xwd` gives for Xvfb's default visual) as an RGB PNG."""
    fields = struct.unpack(">25I", data[:100])
    header_size, width, height, byte_order = fields[0], fields[4], fields[5], fields[7]
    bits_per_pixel, bytes_per_line, ncolors = fields[11], fields[12], fields[19]
    if bits_per_pixel != 32:
        raise ValueError(f"only 32 bits per pixel XWD is handled, not {bits_per_pixel}")
    red_mask, green_mask, blue_mask = fields[14], fields[15], fields[16]
    pixels = data[header_size + 12 * ncolors:]
    order = "<" if byte_order == 0 else ">"

    def shift(mask: int) -> int:
        return (mask & -mask).bit_length() - 1

    rs, gs, bs = shift(red_mask), shift(green_mask), shift(blue_mask)
    rows = []
    for y in range(height):
        line = pixels[y * bytes_per_line: y * bytes_per_line + 4 * width]
        values = struct.unpack(f"{order}{width}I", line)
        row = bytearray(b"\x00")   # filter: none
        for v in values:
            row += bytes(((v & red_mask) >> rs, (v & green_mask) >> gs, (v & blue_mask) >> bs))
        rows.append(bytes(row))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
            + chunk(b"IEND", b""))
