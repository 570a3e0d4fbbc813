/**
 * What a generation reports about itself (`instar status`), including the
 * generation before it while that one still drains.
 *
 * @module
 */

import * as host from "../host.ts";
import { formatAddr } from "../ffi/sockaddr.ts";
import { processRuns } from "../proc.ts";
import { openConnections } from "../net/sock_diag.ts";
import { isDatagramKey, type StatusReport } from "../protocol/messages.ts";
import type { Endpoint, State } from "../types.ts";

/** The status of generation `generation` serving `endpoints`. */
export async function statusReport(
  generation: number,
  state: State,
  parentPid: number | null,
  endpoints: readonly Endpoint[],
): Promise<StatusReport> {
  const listeners = await Promise.all(endpoints.map(async (e) => ({
    addr: shown(e),
    connections: await e.connections(),
  })));
  return {
    pid: host.pid(),
    generation,
    state,
    listeners,
    parentPid,
    previous: await previous(generation, parentPid, endpoints),
  };
}

// The generation that started this one, while it still drains: what it still serves.
async function previous(
  generation: number,
  pid: number | null,
  endpoints: readonly Endpoint[],
): Promise<StatusReport["previous"]> {
  if (pid === null || !processRuns(pid)) return null;
  const listeners = await Promise.all(endpoints.map(async (e) => ({
    addr: shown(e),
    connections: e.addr.transport === "tcp" && !isDatagramKey(e.key)
      ? await openConnections(e.addr.port, pid)
      : null,
  })));
  return { pid, generation: generation - 1, listeners };
}

// A datagram socket's address is carried tcp/unix shaped: its key says udp:… or unixgram:….
function shown(e: Endpoint): string {
  if (!isDatagramKey(e.key)) return formatAddr(e.addr);
  return `${e.addr.transport === "unix" ? "unixgram" : "udp"}:${formatAddr(e.addr)}`;
}
