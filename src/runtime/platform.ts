/**
 * Which mode this process runs in, decided once and nowhere else:
 *
 * - `linux`: the full mode. Sockets are opened through libc, passed to the
 *   next generation, drained by their epoll registrations; upgrades work.
 * - `portable`: every API runs through the runtime's own I/O (`Deno.serve`,
 *   `Bun.serve`, `node:net`, `node:dgram`) with the same types, stops drain
 *   the same way, and upgrade triggers are refused (`unsupported-platform`).
 *
 * Portable mode runs off Linux, where instar has no struct layouts for libc;
 * on Deno without the permissions the full mode needs (FFI, and `/proc/self`,
 * which Deno opens only with `-A`); wherever the FFI backend cannot load; and
 * when `INSTAR_PORTABLE=1` forces it (a test aid, to run the portable paths on
 * Linux). The detection asks for no permission it may lack: it queries
 * Deno's permissions instead of using them, so nothing prompts or throws.
 *
 * @module
 */

import { InstarError } from "../errors.ts";
import { backend, osArch, platform } from "../ffi/mod.ts";
import * as host from "../host.ts";

/** Why portable mode runs. */
export type PortableReason =
  /** `INSTAR_PORTABLE=1` (a test aid). */
  | "forced"
  /** Not Linux x86_64 or aarch64: instar has no libc layouts for it. */
  | "platform"
  /** Deno without the permissions the full mode needs. */
  | "permission"
  /** The FFI backend did not load. */
  | "ffi-unavailable";

/** The mode this process runs in, and why. */
export type PlatformMode =
  | { readonly mode: "linux" }
  | {
    readonly mode: "portable";
    /** Why. */
    readonly reason: PortableReason;
    /** Why, in a few words: `darwin-arm64`, `Deno without --allow-ffi`. */
    readonly why: string;
    /** What would enable upgrades: `run with -A to upgrade`. */
    readonly enable: string;
    /** One sentence for the start-up warning: the mode, why, and how to get upgrades. */
    readonly message: string;
  };

/** The environment variable that forces portable mode on Linux (a test aid). */
export const PORTABLE_ENV = "INSTAR_PORTABLE";

type DenoPermissions = {
  permissions: {
    querySync(d: { name: string; path?: string; variable?: string }): { state: string };
  };
};

let decided: PlatformMode | undefined;
let warned = false;

/** This process's mode, decided on the first call. */
export function platformMode(): PlatformMode {
  return decided ??= decide();
}

/**
 * The start-up warning of portable mode, once per process (an application
 * may create more than one Upgrader); `null` in the full mode or after the first.
 */
export function portableWarning(): string | null {
  const m = platformMode();
  if (m.mode === "linux" || warned) return null;
  warned = true;
  return m.message;
}

const portable = (reason: PortableReason, why: string, enable: string): PlatformMode => ({
  mode: "portable",
  reason,
  why,
  enable,
  message: `portable mode (${why}): serving and stopping work, upgrades are refused; ${enable}`,
});

/** What {@link decideMode} looks at; {@link platformMode} asks this process. */
export interface PlatformProbe {
  /** `INSTAR_PORTABLE=1`, where it may be read. */
  forced: boolean;
  /** As `process.platform` names it. */
  os: string;
  /** As `process.arch` names it. */
  arch: string;
  /** Deno only: the flags the full mode needs and the process lacks ("" when none). */
  denoMissing: string;
  /** Loads the layouts and the FFI backend; throws the InstarError that says why not. */
  openFfi: () => void;
}

/**
 * The mode for `probe`, in order: forced, off Linux, Deno's missing
 * permissions, then whether libc can be reached.
 *
 * @example
 * ```ts
 * import { decideMode } from "./src/runtime/platform.ts"; // internal: platformMode() asks it
 *
 * const m = decideMode({ forced: false, os: "darwin", arch: "arm64", denoMissing: "", openFfi() {} });
 * console.log(m.mode); // "portable"
 * ```
 */
export function decideMode(probe: PlatformProbe): PlatformMode {
  const { os, arch } = probe;
  if (probe.forced) {
    return portable("forced", `${PORTABLE_ENV}=1`, `unset ${PORTABLE_ENV} to upgrade`);
  }
  if (os !== "linux") {
    return portable("platform", `${os}-${arch}`, "upgrades need Linux (docs/portable.md)");
  }
  if (probe.denoMissing) {
    return portable("permission", `Deno without ${probe.denoMissing}`, "run with -A to upgrade");
  }
  try {
    probe.openFfi();
  } catch (err) {
    if (!(err instanceof InstarError)) throw err;
    if (err.code === "UNSUPPORTED_PLATFORM") {
      return portable("platform", `${os}-${arch}`, "upgrades need Linux on x86_64 or aarch64");
    }
    return portable("ffi-unavailable", err.message, "upgrades need libc through FFI");
  }
  return { mode: "linux" };
}

// This process: Deno's permissions are queried before FFI is touched (a query never prompts).
function decide(): PlatformMode {
  const deno = (globalThis as unknown as { Deno?: DenoPermissions }).Deno;
  const { os, arch } = osArch();
  return decideMode({
    forced: forced(deno),
    os,
    arch,
    denoMissing: deno && os === "linux" ? denoMissing(deno) : "",
    openFfi: () => {
      platform();
      backend();
    },
  });
}

// Read only when Deno grants it: Deno.env.get throws without --allow-env (and may prompt).
function forced(deno: DenoPermissions | undefined): boolean {
  const readable = !deno ||
    deno.permissions.querySync({ name: "env", variable: PORTABLE_ENV }).state === "granted";
  return readable && host.getEnv(PORTABLE_ENV) === "1";
}

// The flags the full mode needs and this process lacks, named for the warning; "" when none.
function denoMissing(deno: DenoPermissions): string {
  const granted = (d: { name: string; path?: string; variable?: string }) =>
    deno.permissions.querySync(d).state === "granted";
  const missing: string[] = [];
  if (!granted({ name: "ffi" })) missing.push("--allow-ffi");
  if (!granted({ name: "read", path: "/proc/self" })) missing.push("--allow-read");
  if (!granted({ name: "env" })) missing.push("--allow-env");
  return missing.join(" ");
}
