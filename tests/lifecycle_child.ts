// Run by tests/lifecycle_test.ts. Counts the timers instar starts (the global
// timer functions are wrapped before instar loads), then:
//   timers <notify-socket>  ready with a listener and a control socket, report
//                           the live timers while idle; start an upgrade that
//                           never gets ready (systemd on: EXTEND_TIMEOUT
//                           interval), stop during it, report the live timers
//                           after `drained` (exitAfterDrain: false); the
//                           process must then exit by itself.
//   drained <file>          stop; an onDrained hook and the code after
//                           `await up.drained` append to <file> before the exit.
import process from "node:process";
import { appendFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const live = new Map<unknown, string>();
const g = globalThis as unknown as Record<string, (...a: unknown[]) => unknown>;
const wrap = (name: string, clear: string) => {
  const set = g[name], unset = g[clear];
  g[name] = (fn: unknown, ms?: unknown, ...rest: unknown[]) => {
    const once = name === "setTimeout";
    const h: unknown = set(
      (...a: unknown[]) => {
        if (once) live.delete(h);
        (fn as (...a: unknown[]) => void)(...a);
      },
      ms,
      ...rest,
    );
    live.set(h, `${name}(${ms}) at ${new Error().stack?.split("\n")[2]?.trim()}`);
    return h;
  };
  g[clear] = (h: unknown) => {
    live.delete(h);
    unset(h);
  };
};
wrap("setTimeout", "clearTimeout");
wrap("setInterval", "clearInterval");

const { Upgrader } = await import("../mod.ts");
const [mode, arg] = process.argv.slice(2);
const say = (o: unknown) => console.log(JSON.stringify(o));

if (mode === "timers") {
  process.env.NOTIFY_SOCKET = arg;
  const dir = mkdtempSync(join(tmpdir(), "instar-timers-"));
  const up = await Upgrader.create({
    upgradeSignal: null,
    stopSignals: [],
    exitAfterDrain: false,
    controlSocket: join(dir, "ctl.sock"),
    command: "/bin/sleep",
    args: ["30"],
  });
  const listener = await up.listen({ hostname: "127.0.0.1", port: 0 });
  await up.ready();
  await new Promise((r) => setTimeout(r, 300));
  say({ idle: [...live.values()] });
  const upgrading = up.upgrade().catch((e) => e.reason);
  await new Promise((r) => setTimeout(r, 200));
  say({ upgrading: [...live.values()].length });
  up.stop();
  await up.drained;
  say({ reason: await upgrading, after: [...live.values()], state: up.state, fd: listener.fd });
} else if (mode === "drained") {
  const up = await Upgrader.create({ upgradeSignal: null, stopSignals: [] });
  await up.listen({ hostname: "127.0.0.1", port: 0 });
  up.onDrained(async () => {
    await new Promise((r) => setTimeout(r, 200));
    appendFileSync(arg, "hook\n");
  });
  await up.ready();
  up.stop();
  await up.drained;
  appendFileSync(arg, "after\n");
}
