/**
 * The signals a generation answers: the upgrade signal and the stop signals.
 * Handlers stay installed until the generation has drained, so no signal
 * reaches its default action (which would kill a generation with requests
 * in flight): an upgrade signal while draining is refused. A second SIGINT
 * (Ctrl-C pressed again: a person who does not want to wait) forces the exit;
 * a repeated SIGTERM does not, because machines repeat it: systemd's default
 * KillMode signals every process of the unit while a supervisor forwards its
 * own, `docker stop` and kubelet may resend. The drain timeout bounds the wait.
 *
 * @module
 */

import * as host from "../host.ts";
import { invalid } from "../errors.ts";
import { SIGNALS } from "../ffi/mod.ts";

/** Throws `INVALID_ARGUMENT` unless `name` is a signal instar may handle; returns its number. */
export function checkSignal(option: string, name: string): number {
  const n = SIGNALS[name];
  if (n === undefined) invalid(option, name, "a signal name such as SIGHUP");
  if (name === "SIGUSR1") invalid(option, name, "another signal: Deno's inspector owns SIGUSR1");
  if (name === "SIGKILL" || name === "SIGSTOP") {
    invalid(option, name, "a signal that can be handled");
  }
  return n;
}

/** What the generation does on each kind of signal. */
export interface SignalActions {
  /** The upgrade signal arrived. */
  upgrade(): void;
  /** A stop signal arrived; `count` is 1 for the first, 2 and more for a repeated SIGINT. */
  stop(count: number): void;
}

/** Installs the handlers; returns the function that removes them all. */
export function installSignals(
  upgradeSignal: string | null,
  stopSignals: readonly string[],
  actions: SignalActions,
): () => void {
  const installed: [string, () => void][] = [];
  if (upgradeSignal) installed.push([upgradeSignal, () => actions.upgrade()]);
  let stops = 0;
  const onStop = (sig: string) => {
    if (stops === 0 || sig === "SIGINT") actions.stop(++stops);
  };
  for (const s of stopSignals) installed.push([s, () => onStop(s)]);
  const added = installed.filter(([sig, h]) => {
    try {
      host.onSignal(sig, h);
      return true;
    } catch {
      // A platform without it (Windows knows SIGINT and SIGBREAK only): it cannot arrive either.
      return false;
    }
  });
  return () => {
    for (const [sig, h] of added) host.offSignal(sig, h);
  };
}
