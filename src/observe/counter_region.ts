/**
 * The counter region: shared memory (a sealed memfd, mapped `MAP_SHARED`)
 * that every generation of a server counts in, passed on like the listening
 * sockets. Each generation counts in a slot of its own; everyone reads the
 * sum of all slots. A generation that has exited leaves its slot's counts
 * where they are, and the next generation to need a slot continues counting
 * in it, so nothing is ever folded or moved: the sum only grows, and it is
 * exact once every generation that counted has stopped counting (why this
 * design: docs/observability.md, "Counters that survive upgrades").
 *
 * Layout (little-endian, version 1):
 * - header, 64 bytes: magic `INSC`, version, slots, names, name bytes;
 * - the names table: {@link NAMES} entries of an int32 length (0: empty,
 *   -1: being written), 4 bytes unused and {@link NAME_BYTES} of UTF-8;
 * - {@link SLOTS} slots: int32 owner pid (0: free), int32 generation,
 *   8 bytes unused, then one float64 count per name (exact up to 2^53).
 *
 * A region passed by another process is hostile input: its seals, size,
 * header, names and counts are checked before it is used ({@link openRegion}),
 * and a bad one is refused (counting starts afresh, with a warning).
 *
 * @module
 */

import { InstarError } from "../errors.ts";
import * as sys from "../ffi/mod.ts";
import { C } from "../ffi/mod.ts";
import { processRuns } from "../proc.ts";

/** How many generations can hold a slot at once (exited ones free theirs). */
export const SLOTS = 64;
/** How many counter names the region holds. */
export const NAMES = 256;
/** The longest counter name, in UTF-8 bytes (an endpoint key of 300 characters fits with its prefix). */
export const NAME_BYTES = 320;

const MAGIC = 0x43534e49; // "INSC" read as a little-endian u32
const VERSION = 1;
const HEADER = 64;
const NAME_ENTRY = 8 + NAME_BYTES;
const SLOT_HEADER = 16;
const SLOT_BYTES = SLOT_HEADER + 8 * NAMES;
const SLOTS_AT = HEADER + NAMES * NAME_ENTRY;
/** The region's size in bytes. */
export const REGION_BYTES: number = SLOTS_AT + SLOTS * SLOT_BYTES;
const SEALS = C.F_SEAL_SHRINK | C.F_SEAL_GROW;

function refuse(what: string): never {
  throw new InstarError("PROTOCOL_ERROR", `instar counter region: ${what}`);
}

/** The memory of a region, as typed views; `fd` is null for a private one (nothing to pass). */
export class CounterRegion {
  /** The memfd to pass to the next generation, or null (private, or closed by {@link release}). */
  fd: number | null;
  readonly #i32: Int32Array;
  readonly #u8: Uint8Array;
  readonly #f64: Float64Array;
  #slot = -1;
  // Counts of this process when no slot was free: not shared, lost at exit.
  #privateCounts: Float64Array | null = null;
  #index = new Map<string, number>();

  private constructor(buffer: ArrayBuffer, fd: number | null) {
    this.fd = fd;
    this.#i32 = new Int32Array(buffer);
    this.#u8 = new Uint8Array(buffer);
    this.#f64 = new Float64Array(buffer);
  }

  /** A fresh region in a new sealed memfd (throws the SystemError of memfd_create, ftruncate or mmap). */
  static create(): CounterRegion {
    const fd = sys.memfdCreate("instar-counters", C.MFD_CLOEXEC | C.MFD_ALLOW_SEALING);
    try {
      sys.ftruncate(fd, REGION_BYTES);
      // Never shrunk: a mapping past the end of its file raises SIGBUS on access.
      sys.fcntl(fd, C.F_ADD_SEALS, SEALS | C.F_SEAL_SEAL);
      const r = new CounterRegion(map(fd), fd);
      r.#writeHeader();
      return r;
    } catch (err) {
      sys.close(fd);
      throw err;
    }
  }

  /** A region in this process's memory only: the fallback when no memfd can be made. */
  static private(): CounterRegion {
    const r = new CounterRegion(new ArrayBuffer(REGION_BYTES), null);
    r.#writeHeader();
    return r;
  }

  /**
   * The region on `fd`, passed by another process, checked: a sealed memfd
   * of exactly {@link REGION_BYTES}, this layout's header, well-formed names
   * and counts. Throws `PROTOCOL_ERROR` naming the first fault (the caller
   * closes `fd`).
   */
  static adopt(fd: number): CounterRegion {
    let seals: number;
    try {
      seals = sys.fcntl(fd, C.F_GET_SEALS);
    } catch (err) {
      refuse(`fd ${fd} is not a sealed memfd (${(err as Error).message})`);
    }
    if ((seals & SEALS) !== SEALS) refuse(`fd ${fd} may still change size (seals ${seals})`);
    const size = sys.fileSize(fd);
    if (size !== REGION_BYTES) refuse(`fd ${fd} has ${size} bytes, not ${REGION_BYTES}`);
    const r = new CounterRegion(map(fd), fd);
    r.#check();
    return r;
  }

  #writeHeader(): void {
    const h = this.#i32;
    h[0] = MAGIC, h[1] = VERSION, h[2] = SLOTS, h[3] = NAMES, h[4] = NAME_BYTES;
  }

  #check(): void {
    const [magic, version, slots, names, nameBytes] = this.#i32;
    if (magic !== MAGIC) refuse(`not a counter region (magic ${magic >>> 0})`);
    const layout = `${version}/${slots}/${names}/${nameBytes}`;
    const ours = `${VERSION}/${SLOTS}/${NAMES}/${NAME_BYTES}`;
    if (layout !== ours) {
      refuse(`layout ${layout} (version/slots/names/name bytes), this build uses ${ours}`);
    }
    for (let i = 0; i < NAMES; i++) {
      const len = this.#i32[(HEADER + i * NAME_ENTRY) / 4];
      if (len < -1 || len > NAME_BYTES) refuse(`name ${i} has length ${len}`);
      if (len > 0 && this.#name(i) === null) refuse(`name ${i} is not UTF-8`);
    }
    for (let s = 0; s < SLOTS; s++) {
      const owner = this.#i32[(SLOTS_AT + s * SLOT_BYTES) / 4];
      if (owner < 0) refuse(`slot ${s} has owner ${owner}`);
      for (let i = 0; i < NAMES; i++) {
        const n = this.#f64[this.#countAt(s, i)];
        if (!Number.isSafeInteger(n) || n < 0) refuse(`slot ${s} count ${i} is ${n}`);
      }
    }
  }

  /**
   * Takes a slot for process `pid`: a free one, else one whose owner no
   * longer runs (it died without freeing it; a pid is looked for in this
   * process's pid namespace, so a generation handed over across namespaces
   * should find free slots, as it does unless 64 generations live at once).
   * Its counts stay: this generation counts on from them. False when every
   * slot is held by a running process (this process then counts privately,
   * and those counts end with it).
   */
  claim(pid: number, generation: number): boolean {
    for (const dead of [false, true]) {
      for (let s = 0; s < SLOTS; s++) {
        const at = (SLOTS_AT + s * SLOT_BYTES) / 4;
        const owner = Atomics.load(this.#i32, at);
        if (dead ? owner === 0 || processRuns(owner) : owner !== 0) continue;
        if (Atomics.compareExchange(this.#i32, at, owner, pid) === owner) {
          return this.#take(s, at, generation);
        }
      }
    }
    this.#privateCounts = new Float64Array(NAMES);
    return false;
  }

  #take(slot: number, at: number, generation: number): true {
    this.#slot = slot;
    this.#i32[at + 1] = generation;
    return true;
  }

  /**
   * Frees this process's slot (its counts stay, for the sum and the next
   * owner) and closes the fd; the mapping stays, so that the views still
   * read (a late scrape) and never fault.
   */
  release(): void {
    if (this.fd !== null) sys.close(this.fd);
    this.fd = null;
    if (this.#slot < 0) return;
    Atomics.store(this.#i32, (SLOTS_AT + this.#slot * SLOT_BYTES) / 4, 0);
    this.#slot = -1;
  }

  /**
   * This process's count `name` as a one-element view: `view[0]++` is the
   * whole cost of counting. Null when the names table is full.
   */
  counter(name: string): Float64Array | null {
    const i = this.#indexOf(name);
    if (i === null) return null;
    if (this.#slot < 0) {
      this.#privateCounts ??= new Float64Array(NAMES);
      return this.#privateCounts.subarray(i, i + 1);
    }
    const at = this.#countAt(this.#slot, i);
    return this.#f64.subarray(at, at + 1);
  }

  /**
   * Every name's sum over all slots (and this process's private counts),
   * read once: a scrape costs {@link NAMES} × {@link SLOTS} additions.
   */
  totals(): Map<string, number> {
    const out = new Map<string, number>();
    for (let i = 0; i < NAMES; i++) {
      const name = this.#name(i);
      if (name === null) continue;
      let sum = this.#privateCounts?.[i] ?? 0;
      for (let s = 0; s < SLOTS; s++) sum += countOf(this.#f64[this.#countAt(s, i)]);
      // Two processes adding the same name at once may both add it: every entry counts.
      out.set(name, (out.get(name) ?? 0) + sum);
    }
    return out;
  }

  #countAt(slot: number, i: number): number {
    return (SLOTS_AT + slot * SLOT_BYTES + SLOT_HEADER) / 8 + i;
  }

  #name(i: number): string | null {
    const at = HEADER + i * NAME_ENTRY;
    const len = Atomics.load(this.#i32, at / 4);
    if (len <= 0 || len > NAME_BYTES) return null;
    try {
      return DECODER.decode(this.#u8.subarray(at + 8, at + 8 + len));
    } catch {
      return null;
    }
  }

  // The entry of `name`, added when missing and `add`; null when the table is full.
  #indexOf(name: string): number | null {
    const known = this.#index.get(name);
    if (known !== undefined) return known;
    for (let i = 0; i < NAMES; i++) {
      if (this.#name(i) === name) return this.#remember(name, i);
    }
    const bytes = new TextEncoder().encode(name);
    if (bytes.byteLength === 0 || bytes.byteLength > NAME_BYTES) return null;
    for (let i = 0; i < NAMES; i++) {
      const at = HEADER + i * NAME_ENTRY;
      // -1 marks the entry taken while its bytes are written; the length, stored last, publishes it.
      if (Atomics.compareExchange(this.#i32, at / 4, 0, -1) !== 0) continue;
      this.#u8.set(bytes, at + 8);
      Atomics.store(this.#i32, at / 4, bytes.byteLength);
      return this.#remember(name, i);
    }
    return null;
  }

  #remember(name: string, i: number): number {
    this.#index.set(name, i);
    return i;
  }
}

const DECODER = new TextDecoder("utf-8", { fatal: true });

// A count as written by another process: anything but a count adds nothing.
function countOf(n: number): number {
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}

function map(fd: number): ArrayBuffer {
  // Never unmapped: views of it live as long as the process counts.
  return sys.arrayBufferAt(sys.mmapShared(fd, REGION_BYTES), REGION_BYTES);
}

/** A region and whether it came from the previous generation. */
export interface OpenedRegion {
  /** The region this generation counts in. */
  region: CounterRegion;
  /** True when it is the previous generation's (its counts are in it already). */
  adopted: boolean;
}

/**
 * The region passed on `fd` if it checks out, else a fresh one (a warning
 * names why the passed one was refused and says counting starts afresh);
 * a private one when no memfd can be made, or when `shared` is false (portable
 * mode: nothing is passed on, and libc is not used). Never throws.
 */
export function openRegion(
  fd: number | null,
  warn: (message: string) => void,
  shared = true,
): OpenedRegion {
  if (!shared) return { region: CounterRegion.private(), adopted: false };
  if (fd !== null) {
    try {
      return { region: CounterRegion.adopt(fd), adopted: true };
    } catch (err) {
      if (fd > 2) sys.close(fd);
      warn(`${(err as Error).message}; refused: counting starts afresh in a new region`);
    }
  }
  try {
    return { region: CounterRegion.create(), adopted: false };
  } catch (err) {
    warn(
      `could not create the counter region (${(err as Error).message}): ` +
        "counts are kept in this process and not passed on",
    );
    return { region: CounterRegion.private(), adopted: false };
  }
}
