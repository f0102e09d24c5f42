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
