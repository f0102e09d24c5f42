/*
 * udp-batch: sends many UDP datagrams per system call on a socket Node.js owns
 * (node:dgram's fd), for xianet/udp-link.ts at small MTUs.
 *
 *   sockaddr(host, port) -> Buffer | undefined
 *     A numeric IPv4 or IPv6 address ("fe80::1%veth0" included) as a struct sockaddr,
 *     built once per neighbour; undefined for anything else (a name).
 *   sendBatch(fd, addrs, segments, iovCounts, buffers, first, count) -> number
 *     One sendmmsg(2) of messages first..first+count-1: message i goes to addrs[i], is
 *     the concatenation of its iovCounts[i] buffers (taken in order from `buffers`, which
 *     holds every message's buffers one after the other, from message 0), and when
 *     segments[i] > 0 carries a UDP_SEGMENT cmsg: the kernel cuts it into datagrams of
 *     segments[i] bytes (the last may be shorter), each one UDP datagram on the wire (GSO).
 *     Returns how many messages the kernel took (>= 1), or -errno when it took none
 *     (-EAGAIN: the socket buffer is full). Never blocks: the fd is libuv's, non-blocking.
 *   enableGro(fd) -> number
 *     setsockopt(UDP_GRO) on the socket: the kernel hands it a run of datagrams sent with
 *     UDP GSO (or coalesced on the way in) as one, the packets back to back, instead of
 *     cutting it up first. 0, or -errno (-ENOPROTOOPT: a kernel before 5.0).
 *   keepFreedMemory(bytes) -> number
 *     mallopt(M_TRIM_THRESHOLD, bytes) for the whole process: glibc gives freed heap back
 *     to the kernel only once more than `bytes` lies free at its top. 0, or -errno
 *     (-ENOSYS: not glibc). Why (xianet/allocator.ts): node:dgram allocates each received
 *     datagram's memory anew, and with glibc's 128 KiB default the heap is handed back
 *     and faulted in again, zeroed page by page, between two of V8's scavenges.
 *   pipeCapacity(fd, bytes) -> number
 *     F_SETPIPE_SZ on a pipe to at least `bytes` (the kernel rounds up to a power-of-two
 *     number of pages), or with bytes 0 F_GETPIPE_SZ: its capacity now, or -errno
 *     (-EPERM: past /proc/sys/fs/pipe-max-size or the user's pipe quota; -EBADF or
 *     -EINVAL: not a pipe). Why (mover/pipe-capacity.ts): QEMU's exec: stream crosses a
 *     64 KiB pipe otherwise, a system call and a wake-up on either side every 64 KiB.
 *
 * Plain node_api.h (N-API 4), no node-addon-api: it builds with a C compiler alone.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define MAX_MESSAGES 64
#define MAX_IOVS 1024

#define CHECK(call)                                                      \
  do {                                                                   \
    if ((call) != napi_ok) {                                             \
      napi_throw_error(env, "ERR_UDP_BATCH", "udp-batch: bad argument"); \
      return NULL;                                                       \
    }                                                                    \
  } while (0)

static napi_value throw_type(napi_env env, const char *message) {
  napi_throw_type_error(env, "ERR_UDP_BATCH", message);
  return NULL;
}

/*
 * The first `count` (at most 2) arguments as int32s: false, with an error thrown, if there
 * are fewer (a TypeError saying `usage`) or one is not a number (as CHECK throws).
 */
static bool int_args(napi_env env, napi_callback_info info, size_t count, int32_t *out, const char *usage) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < count) {
    throw_type(env, usage);
    return false;
  }
  for (size_t i = 0; i < count; i++) {
    if (napi_get_value_int32(env, argv[i], &out[i]) != napi_ok) {
      napi_throw_error(env, "ERR_UDP_BATCH", "udp-batch: bad argument");
      return false;
    }
  }
  return true;
}

static napi_value int_result(napi_env env, int32_t value) {
  napi_value result;
  CHECK(napi_create_int32(env, value, &result));
  return result;
}

static napi_value make_sockaddr(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) return throw_type(env, "sockaddr(host, port)");
  char host[128];
  size_t length = 0;
  uint32_t port = 0;
  CHECK(napi_get_value_string_utf8(env, argv[0], host, sizeof host, &length));
  CHECK(napi_get_value_uint32(env, argv[1], &port));
  napi_value undefined;
  CHECK(napi_get_undefined(env, &undefined));
  if (length >= sizeof host - 1 || port > 65535) return undefined;
  void *data = NULL;
  napi_value result;
  struct sockaddr_in v4;
  memset(&v4, 0, sizeof v4);
  if (inet_pton(AF_INET, host, &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    v4.sin_port = htons((uint16_t)port);
    CHECK(napi_create_buffer_copy(env, sizeof v4, &v4, &data, &result));
    return result;
  }
  struct sockaddr_in6 v6;
  memset(&v6, 0, sizeof v6);
  char *scope = strchr(host, '%');
  if (scope) {
    *scope++ = 0;
    unsigned index = if_nametoindex(scope);
    if (index == 0) {
      char *end = NULL;
      unsigned long numeric = strtoul(scope, &end, 10);
      if (*scope == 0 || *end != 0) return undefined;
      index = (unsigned)numeric;
    }
    v6.sin6_scope_id = index;
  }
  if (inet_pton(AF_INET6, host, &v6.sin6_addr) != 1) return undefined;
  v6.sin6_family = AF_INET6;
  v6.sin6_port = htons((uint16_t)port);
  CHECK(napi_create_buffer_copy(env, sizeof v6, &v6, &data, &result));
  return result;
}

static napi_value send_batch(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 7) return throw_type(env, "sendBatch(fd, addrs, segments, iovCounts, buffers, first, count)");
  int32_t fd;
  uint32_t first, count;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  CHECK(napi_get_value_uint32(env, argv[5], &first));
  CHECK(napi_get_value_uint32(env, argv[6], &count));
  if (count == 0 || count > MAX_MESSAGES) return throw_type(env, "sendBatch: 1 to 64 messages");

  /* On the stack (~21 KB), not static: worker threads may send on their own sockets at once. */
  struct mmsghdr messages[MAX_MESSAGES];
  struct iovec iovs[MAX_IOVS];
  char controls[MAX_MESSAGES][CMSG_SPACE(sizeof(uint16_t))];
  memset(messages, 0, sizeof messages);

  /* Skip the buffers of the messages before `first`. */
  uint32_t buffer = 0;
  for (uint32_t i = 0; i < first; i++) {
    napi_value value;
    uint32_t n;
    CHECK(napi_get_element(env, argv[3], i, &value));
    CHECK(napi_get_value_uint32(env, value, &n));
    buffer += n;
  }
  uint32_t iov = 0;
  for (uint32_t m = 0; m < count; m++) {
    uint32_t i = first + m;
    napi_value value;
    uint32_t n, segment;
    CHECK(napi_get_element(env, argv[3], i, &value));
    CHECK(napi_get_value_uint32(env, value, &n));
    CHECK(napi_get_element(env, argv[2], i, &value));
    CHECK(napi_get_value_uint32(env, value, &segment));
    if (n == 0 || iov + n > MAX_IOVS || segment > 65535) return throw_type(env, "sendBatch: bad message");
    struct msghdr *header = &messages[m].msg_hdr;
    void *address;
    size_t address_length;
    CHECK(napi_get_element(env, argv[1], i, &value));
    CHECK(napi_get_buffer_info(env, value, &address, &address_length));
    if (address_length != sizeof(struct sockaddr_in) && address_length != sizeof(struct sockaddr_in6)) {
      return throw_type(env, "sendBatch: bad address");
    }
    header->msg_name = address;
    header->msg_namelen = (socklen_t)address_length;
    header->msg_iov = &iovs[iov];
    header->msg_iovlen = n;
    for (uint32_t b = 0; b < n; b++, buffer++, iov++) {
      void *data;
      size_t length;
      CHECK(napi_get_element(env, argv[4], buffer, &value));
      CHECK(napi_get_buffer_info(env, value, &data, &length));
      iovs[iov].iov_base = data;
      iovs[iov].iov_len = length;
    }
    if (segment > 0) {
      header->msg_control = controls[m];
      header->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
      struct cmsghdr *cmsg = CMSG_FIRSTHDR(header);
      cmsg->cmsg_level = SOL_UDP;
      cmsg->cmsg_type = UDP_SEGMENT;
      cmsg->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t size = (uint16_t)segment;
      memcpy(CMSG_DATA(cmsg), &size, sizeof size);
    }
  }
  int sent;
  do {
    sent = sendmmsg(fd, messages, count, MSG_DONTWAIT);
  } while (sent < 0 && errno == EINTR);
  napi_value result;
  CHECK(napi_create_int32(env, sent < 0 ? -errno : sent, &result));
  return result;
}

static napi_value enable_gro(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!int_args(env, info, 1, &fd, "enableGro(fd)")) return NULL;
  int one = 1;
  int done = setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof one);
  return int_result(env, done < 0 ? -errno : 0);
}

/*
 * forceBuffers(fd, bytes): SO_RCVBUFFORCE and SO_SNDBUFFORCE, which a process with
 * CAP_NET_ADMIN may set beyond net.core.rmem_max / wmem_max (SO_RCVBUF, all node:dgram
 * has, stops there silently). 0, or -errno of the first that failed (EPERM unprivileged).
 */
static napi_value force_buffers(napi_env env, napi_callback_info info) {
  int32_t args[2];
  if (!int_args(env, info, 2, args, "forceBuffers(fd, bytes)")) return NULL;
  int32_t fd = args[0], bytes = args[1];
  if (bytes <= 0) return throw_type(env, "forceBuffers: bytes must be positive");
  int failed = 0;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) < 0) failed = errno;
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) < 0 && !failed) failed = errno;
  return int_result(env, -failed);
}

static napi_value keep_freed_memory(napi_env env, napi_callback_info info) {
  int32_t bytes;
  if (!int_args(env, info, 1, &bytes, "keepFreedMemory(bytes)")) return NULL;
  if (bytes <= 0) return throw_type(env, "keepFreedMemory: bytes must be positive");
#ifdef __GLIBC__
  int done = mallopt(M_TRIM_THRESHOLD, bytes) == 1 ? 0 : -EINVAL;
#else
  int done = -ENOSYS;
#endif
  return int_result(env, done);
}

static napi_value pipe_capacity(napi_env env, napi_callback_info info) {
  int32_t args[2];
  if (!int_args(env, info, 2, args, "pipeCapacity(fd, bytes)")) return NULL;
  int32_t fd = args[0], bytes = args[1];
  if (fd < 0 || bytes < 0) return throw_type(env, "pipeCapacity: fd and bytes must not be negative");
  int done = bytes == 0 ? fcntl(fd, F_GETPIPE_SZ) : fcntl(fd, F_SETPIPE_SZ, bytes);
  if (done < 0) done = -errno;
  return int_result(env, done);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor properties[] = {
      {"sockaddr", NULL, make_sockaddr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sendBatch", NULL, send_batch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"enableGro", NULL, enable_gro, NULL, NULL, NULL, napi_enumerable, NULL},
      {"forceBuffers", NULL, force_buffers, NULL, NULL, NULL, napi_enumerable, NULL},
      {"keepFreedMemory", NULL, keep_freed_memory, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pipeCapacity", NULL, pipe_capacity, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_value constants;
  if (napi_create_object(env, &constants) != napi_ok) return NULL;
  napi_value value;
  if (napi_create_int32(env, EAGAIN, &value) != napi_ok || napi_set_named_property(env, constants, "EAGAIN", value) != napi_ok) return NULL;
  if (napi_create_int32(env, MAX_MESSAGES, &value) != napi_ok || napi_set_named_property(env, constants, "maxMessages", value) != napi_ok) return NULL;
  if (napi_create_int32(env, MAX_IOVS, &value) != napi_ok || napi_set_named_property(env, constants, "maxIovs", value) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "constants", constants) != napi_ok) return NULL;
  if (napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
