/**
 * The environment systemd's variables are read from, shared by the notifier
 * and socket activation.
 *
 * @module
 */

/**
 * An environment to read variables from (and delete consumed ones from); `process.env` by default.
 *
 * @example
 * ```ts
 * import { type Env, systemdNotifier } from "@instar/instar/unstable";
 *
 * const env: Env = { NOTIFY_SOCKET: "/run/systemd/notify" };
 * const notify = systemdNotifier({ env });
 * ```
 */
export type Env = Record<string, string | undefined>;
