/**
 * The floor bench/supervisor.ts compares the idle supervisor with: a process of
 * the same runtime that loads what any supervisor in it would need (libc
 * through FFI, node:net, a SIGCHLD listener) and then only waits.
 *
 *   deno run -A bench/supervisor_floor.ts   |   bun bench/supervisor_floor.ts
 *
 * @module
 */
import "node:net";
import process from "node:process";
import { getpid } from "../src/ffi/mod.ts";

getpid();
process.on("SIGCHLD", () => {});
setInterval(() => {}, 2 ** 31 - 1);
