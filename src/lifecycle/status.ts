/**
 * What a generation reports about itself (`instar status`), including the
 * generation before it while that one still drains.
 *
 * @module
 */

import process from "node:process";
import { formatAddr } from "../ffi/sockaddr.ts";
import { processRuns, tcpConnections } from "../proc.ts";
import type { StatusReport } from "../protocol.ts";
import type { Endpoint, State } from "../types.ts";

/** The status of generation `generation` serving `endpoints`. */
export async function statusReport(
  generation: number,
  state: State,
  parentPid: number | null,
  endpoints: readonly Endpoint[],
): Promise<StatusReport> {
  const listeners = await Promise.all(endpoints.map(async (e) => ({
    addr: formatAddr(e.addr),
    connections: await e.connections(),
  })));
  return {
    pid: process.pid,
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
    addr: formatAddr(e.addr),
    connections: e.addr.transport === "tcp" ? await tcpConnections(e.addr.port, pid) : null,
  })));
  return { pid, generation: generation - 1, listeners };
}
