/**
 * The fd limit of a generation: at `Upgrader.create()` the soft
 * RLIMIT_NOFILE is raised to the hard one, as Node does at start (Deno 2.9
 * and Bun 1.4 already do it themselves; this keeps it so should a runtime
 * stop). A server holds one fd per connection; the usual soft limit of 1024
 * (kept low for programs that still use select(), whose FD_SETSIZE is 1024)
 * would make a few hundred idle clients enough to refuse every new
 * connection and every upgrade. Failing to raise it is a warning, never fatal.
 *
 * Children inherit the raised limit, as those of Deno.Command and Bun.spawn
 * do: see docs/design.md "Running out of fds".
 *
 * @module
 */

import { getNofileLimit, setNofileLimit } from "../ffi/mod.ts";
import type { FdLimit } from "../protocol/messages.ts";

/** Raises the soft fd limit to the hard one; returns the limit now in force. */
export function raiseFdLimit(warn: (message: string) => void): FdLimit {
  let found;
  try {
    found = getNofileLimit();
  } catch (err) {
    warn(`cannot read the fd limit: ${(err as Error).message}`);
    return { soft: null, hard: null };
  }
  const limit = (n: number) => (Number.isFinite(n) ? n : null);
  if (found.soft >= found.hard) return { soft: limit(found.soft), hard: limit(found.hard) };
  try {
    setNofileLimit({ soft: found.hard, hard: found.hard });
    return { soft: limit(found.hard), hard: limit(found.hard) };
  } catch (err) {
    warn(
      `cannot raise the soft fd limit from ${found.soft} to the hard limit ${found.hard}: ` +
        `${(err as Error).message}; connections beyond ${found.soft} open fds wait in the backlog`,
    );
    return { soft: limit(found.soft), hard: limit(found.hard) };
  }
}
