/** Where a machine's node listens for applications (override with XMIG_API or --api). */
export const DEFAULT_API_SOCKET = process.env['XMIG_API'] ?? '/run/xmig/node.sock';
/** Where a machine's node takes control-port connections (override with XMIG_CONTROL or --control). */
export const DEFAULT_CONTROL_TARGET = process.env['XMIG_CONTROL'] ?? '/run/xmig/control.sock';
