/**
 * Whether an executable is a compiled Bun binary (`bun build --compile`), so
 * that `instar run --auto` can say what to do instead of a preload, which such
 * a binary does not take from its command line.
 *
 * Bun keeps a compiled program in the ELF section `.bun`: 8 bytes (an empty
 * length) in the plain runtime, the module graph ending with the trailer
 * `"\n---- Bun! ----\n"` in a compiled binary (Bun 1.4.5, measured). Only the
 * ELF header, the section headers, their names and the trailer are read.
 *
 * @module
 */

import { closeSync, openSync, readSync } from "node:fs";

const TRAILER = "\n---- Bun! ----\n";
const MAX_SECTIONS = 4096; // far above any real binary's (a compiled Bun 1.4.5 binary has 38)
/** sizeof(Elf64_Shdr): any other entry size is no ELF64 file Bun wrote, only a way to make us read more. */
const SECTION_HEADER_SIZE = 64;
const MAX_NAMES = 1 << 20; // the section-name table read, at most
// So at most 64 B + 4096 × 64 B (256 KiB) + 1 MiB + the 16-byte trailer are read, whatever the file says.

/** `length` bytes of `fd` at `position` (fewer at the end of the file). */
function readAt(fd: number, position: number, length: number): Uint8Array {
  const buf = new Uint8Array(length);
  const n = readSync(fd, buf, 0, length, position);
  return buf.subarray(0, n);
}

/** The `.bun` section's offset and size, or null (not a 64-bit little-endian ELF, no such section). */
function bunSection(fd: number): { offset: number; size: number } | null {
  const head = readAt(fd, 0, 64);
  // "\x7fELF", ELFCLASS64, ELFDATA2LSB: the only layout Bun builds for Linux x86_64/arm64
  if (head.length < 64 || head[0] !== 0x7f || head[1] !== 0x45 || head[4] !== 2 || head[5] !== 1) {
    return null;
  }
  const h = new DataView(head.buffer);
  const shoff = Number(h.getBigUint64(0x28, true));
  const entSize = h.getUint16(0x3a, true), count = h.getUint16(0x3c, true);
  const strIndex = h.getUint16(0x3e, true);
  if (entSize !== SECTION_HEADER_SIZE || count === 0 || count > MAX_SECTIONS || strIndex >= count) {
    return null;
  }
  const raw = readAt(fd, shoff, entSize * count);
  if (raw.length < entSize * count) return null;
  const table = new DataView(raw.buffer, raw.byteOffset, raw.length);
  const at = (i: number) => ({
    name: table.getUint32(i * entSize, true),
    offset: Number(table.getBigUint64(i * entSize + 24, true)),
    size: Number(table.getBigUint64(i * entSize + 32, true)),
  });
  const strtab = at(strIndex);
  const names = readAt(fd, strtab.offset, Math.min(strtab.size, MAX_NAMES));
  const wanted = new TextEncoder().encode(".bun\0");
  for (let i = 0; i < count; i++) {
    const s = at(i);
    if (wanted.every((b, k) => names[s.name + k] === b)) return s;
  }
  return null;
}

/** True when the file at `path` is a compiled Bun binary; false for anything else, unreadable included. */
export function isCompiledBun(path: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return false;
  }
  try {
    const s = bunSection(fd);
    if (s === null || s.size <= 8 + TRAILER.length) return false;
    const tail = readAt(fd, s.offset + s.size - TRAILER.length, TRAILER.length);
    return new TextDecoder().decode(tail) === TRAILER;
  } catch {
    return false;
  } finally {
    closeSync(fd);
  }
}
