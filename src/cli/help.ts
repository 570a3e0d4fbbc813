/**
 * The `instar` command's help texts: `instar --help` and `instar <command> --help`
 * (`instar run --help` is the supervisor's own, `RUN_HELP`).
 *
 * @module
 */

/** The help texts, by command; `main` is `instar --help`. */
export const HELP: Record<"main" | "upgrade" | "status", string> = {
  main: `instar — zero-downtime upgrades for Deno and Bun servers

Usage:
  instar upgrade (--control <path> | --pid-file <path>) [--timeout <ms>] [--json] [--wait-drain]
  instar status  (--control <path> | --pid-file <path>) [--json]
  instar run [options] -- <command> [args...]
  instar <command> --help

Commands:
  upgrade   start the new version of a running server and wait until it is ready
  status    print pid, generation, state, listeners and open connections
  run       supervise a server: upgrades as PID 1, crash restarts (docs/supervisor.md)
`,
  upgrade: `instar upgrade — start the new version of a running server

Usage:
  instar upgrade --control <path> [--timeout <ms>] [--json] [--wait-drain] [--trigger <word>]
  instar upgrade --pid-file <path> [--signal SIGHUP] [--promotion-window <ms>] [--timeout <ms>] [--json]

With --control the server reports progress and the reason of a failure
(exited, killed, ready-timeout, exec-failed, protocol-error, no-fds, in-progress,
promotion-window, rolled-back). A server with a promotion window answers when
the window has passed (or the new generation was rolled back).
With --pid-file instar sends the upgrade signal and waits until the PID file
names a new, live process; the reason of a failure is in the server's log.
With --promotion-window (the server's promotionWindow) it then watches the
PID file for that long: back to the old pid is a rollback.

With --control the upgrade report (trigger, pids, time to spawn and to ready)
is printed on stderr when the new generation is ready; the old generation
drains after that, so the drain part (duration, connections at the handover,
finished vs cut) is printed only with --wait-drain, which waits for it.

Exit status: 0 and the new pid on stdout when the new generation is ready
(and promoted); 3 when it was rolled back within the promotion window (the
old generation serves on; the reason on stderr); 1 with the reason on stderr
for any other failure; 2 for bad usage. With --json stdout is one JSON object
instead: {"pid": <new pid>, "report": <report or null>}, or
{"pid": null, "error": {"reason", "message"}} on failure.

Options:
  --control <path>   the server's control socket (Upgrader option controlSocket)
  --pid-file <path>  the server's PID file (Upgrader option pidFile)
  --signal <name>    upgrade signal for --pid-file (default SIGHUP)
  --promotion-window <ms>  with --pid-file: watch for a rollback this long
  --timeout <ms>     give up waiting after this long (default 120000; with a
                     promotion window it must cover ready time plus the window)
  --json             print one JSON object on stdout (see above)
  --wait-drain       with --control: also wait until the old generation drained
  --trigger <word>   with --control: what the report names as the trigger
                     (default cli; e.g. watch, for a supervisor)
  -h, --help         this text
`,
  status: `instar status — report on a running server

Usage:
  instar status --control <path> [--json]
  instar status --pid-file <path> [--json]

Options:
  --control <path>   the server's control socket
  --pid-file <path>  the server's PID file (reports only the pid and whether it runs)
  --json             print JSON
  -h, --help         this text
`,
};
