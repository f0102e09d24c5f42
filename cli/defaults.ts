/** Where a machine's node listens for applications (override with XMIG_API or --api). */
export const DEFAULT_API_SOCKET = process.env['XMIG_API'] ?? '/run/xmig/node.sock';
