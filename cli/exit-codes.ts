/** Exit codes of every `xmig` command (sysexits-style where one fits). */
export const ExitCode = {
  OK: 0,
  /** The command ran and the thing it checks failed (a broken connection, packet loss past a limit). */
  FAILURE: 1,
  /** Bad usage: unknown option, missing argument. */
  USAGE: 2,
  /** Bad input data: an address or packet that does not parse (EX_DATAERR). */
  DATA: 65,
  /** A peer or service could not be reached (EX_UNAVAILABLE). */
  UNAVAILABLE: 69,
  /** Bad configuration (EX_CONFIG). */
  CONFIG: 78,
  /** Stopped by Ctrl-C / SIGINT (128 + 2, as shells report it). */
  INTERRUPTED: 130,
} as const;

/** The table the README and xmig(1) print (both from here). */
export const EXIT_CODES: ReadonlyArray<{ code: number; meaning: string }> = [
  { code: ExitCode.OK, meaning: 'success; a daemon stopped by SIGTERM or SIGINT after a clean shutdown' },
  { code: ExitCode.FAILURE, meaning: 'the command ran and what it checks failed (lost pings, a broken Goldbach conversation, a failed migration), or an unexpected error' },
  { code: ExitCode.USAGE, meaning: 'bad usage: an unknown command or option, a missing or malformed argument' },
  { code: ExitCode.DATA, meaning: 'bad input data: an XID, DAG, packet or capture that does not parse (EX_DATAERR)' },
  { code: ExitCode.UNAVAILABLE, meaning: 'a peer or service did not answer: the node\'s API socket, the name server, the receiver (EX_UNAVAILABLE)' },
  { code: ExitCode.CONFIG, meaning: 'bad configuration: a config file that does not validate, a missing key or system user (EX_CONFIG)' },
  { code: ExitCode.INTERRUPTED, meaning: 'interrupted (Ctrl-C) while it ran: xmig migrate cancelled the migration and reports what moved' },
];
