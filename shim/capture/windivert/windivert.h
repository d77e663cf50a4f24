/* Our own declarations of the WinDivert 2.x user-mode ABI (2.0-2.2), written
 * from its documentation: the types, constants and function signatures the
 * backend resolves from WinDivert.dll at run time. Nothing here links against
 * WinDivert; every function is reached through a pointer (see wd_api).
 *
 * Calling convention: WinDivert's exports use the compiler default, which is
 * __cdecl on x86 (the only convention on x64). Written out, so a 32-bit build
 * with another default stays right. */
#ifndef WR_WINDIVERT_H
#define WR_WINDIVERT_H

#include <stdint.h>

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>

/* Layers (WINDIVERT_LAYER, a 32-bit enum). */
#define WD_LAYER_NETWORK 0
#define WD_LAYER_NETWORK_FORWARD 1
#define WD_LAYER_FLOW 2
#define WD_LAYER_SOCKET 3
#define WD_LAYER_REFLECT 4

/* Open flags (UINT64). */
#define WD_FLAG_SNIFF 0x0001ull
#define WD_FLAG_DROP 0x0002ull
#define WD_FLAG_RECV_ONLY 0x0004ull
#define WD_FLAG_SEND_ONLY 0x0008ull
#define WD_FLAG_NO_INSTALL 0x0010ull
#define WD_FLAG_FRAGMENTS 0x0020ull

/* Events (the address's Event field). */
#define WD_EVENT_NETWORK_PACKET 0
#define WD_EVENT_FLOW_ESTABLISHED 1
#define WD_EVENT_FLOW_DELETED 2
#define WD_EVENT_SOCKET_BIND 3
#define WD_EVENT_SOCKET_CONNECT 4
#define WD_EVENT_SOCKET_LISTEN 5
#define WD_EVENT_SOCKET_ACCEPT 6
#define WD_EVENT_SOCKET_CLOSE 7
#define WD_EVENT_REFLECT_OPEN 8
#define WD_EVENT_REFLECT_CLOSE 9

/* Parameters (WINDIVERT_PARAM). Ranges: length 32..16384 packets, time
 * 100..16000 ms, size 65535..33554432 bytes; VERSION_* are read-only. */
#define WD_PARAM_QUEUE_LENGTH 0
#define WD_PARAM_QUEUE_TIME 1
#define WD_PARAM_QUEUE_SIZE 2
#define WD_PARAM_VERSION_MAJOR 3
#define WD_PARAM_VERSION_MINOR 4

/* WinDivertShutdown's `how`. */
#define WD_SHUTDOWN_RECV 1
#define WD_SHUTDOWN_SEND 2
#define WD_SHUTDOWN_BOTH 3

#define WD_PRIORITY_HIGHEST 30000
#define WD_PRIORITY_LOWEST (-30000)
#define WD_BATCH_MAX 255             /* packets per RecvEx/SendEx call */
#define WD_MTU_MAX (40 + 0xffff)     /* the largest packet WinDivert handles */

/* Win32 errors WinDivert reports. */
#define WD_ERROR_FILE_NOT_FOUND 2          /* WinDivert64.sys not found */
#define WD_ERROR_ACCESS_DENIED 5           /* not elevated */
#define WD_ERROR_INVALID_PARAMETER 87      /* filter, layer, priority or flags */
#define WD_ERROR_INSUFFICIENT_BUFFER 122   /* the packet did not fit */
#define WD_ERROR_NO_DATA 232               /* after WinDivertShutdown, once the queue is empty */
#define WD_ERROR_INVALID_IMAGE_HASH 577    /* the driver's signature was rejected */
#define WD_ERROR_DRIVER_FAILED_PRIOR_UNLOAD 654 /* another driver version is loaded */
#define WD_ERROR_SERVICE_DISABLED 1058
#define WD_ERROR_SERVICE_DOES_NOT_EXIST 1060 /* driver not installed (with NO_INSTALL) */
#define WD_ERROR_DRIVER_BLOCKED 1275
#define WD_EPT_S_NOT_REGISTERED 1753       /* the Base Filtering Engine is not running */

/* WINDIVERT_ADDRESS: 80 bytes, 8-aligned. The flag word at offset 8 is a
 * UINT32 bitfield packed from its least significant bit (MSVC, and MinGW's
 * default -mms-bitfields), in the order below. test/windows checks every
 * offset and bit against the documented layout. */
typedef struct {
  uint32_t if_idx;     /* IfIdx */
  uint32_t sub_if_idx; /* SubIfIdx */
} wd_network_data;

/* The SOCKET (and FLOW) layer's data. Addresses are four host-order words,
 * most significant word last (IPv4 as ::ffff:a.b.c.d); ports host order. */
typedef struct {
  uint64_t endpoint_id;        /* EndpointId */
  uint64_t parent_endpoint_id; /* ParentEndpointId */
  uint32_t process_id;         /* ProcessId */
  uint32_t local_addr[4];      /* LocalAddr */
  uint32_t remote_addr[4];     /* RemoteAddr */
  uint16_t local_port;         /* LocalPort */
  uint16_t remote_port;        /* RemotePort */
  uint8_t protocol;            /* Protocol */
} wd_socket_data;

typedef struct {
  int64_t timestamp;   /* Timestamp: when that handle was opened */
  uint32_t process_id; /* ProcessId */
  uint32_t layer;      /* Layer (WINDIVERT_LAYER) */
  uint64_t flags;      /* Flags */
  int16_t priority;    /* Priority */
} wd_reflect_data;

typedef struct {
  int64_t timestamp; /* Timestamp (QueryPerformanceCounter ticks) */
  uint32_t layer : 8;
  uint32_t event : 8;
  uint32_t sniffed : 1;
  uint32_t outbound : 1;
  uint32_t loopback : 1;
  uint32_t impostor : 1;
  uint32_t ipv6 : 1;
  uint32_t ip_checksum : 1;
  uint32_t tcp_checksum : 1;
  uint32_t udp_checksum : 1;
  uint32_t reserved1 : 8;
  uint32_t reserved2;
  union {
    wd_network_data network;
    wd_socket_data socket; /* also the FLOW layer's */
    wd_reflect_data reflect;
    uint8_t reserved3[64];
  } u;
} wd_address;

#define WD_ADDRESS_SIZE 80
_Static_assert(sizeof(wd_address) == WD_ADDRESS_SIZE, "WINDIVERT_ADDRESS is 80 bytes");

/* The functions, as pointer types. */
typedef HANDLE(__cdecl *wd_open_fn)(const char *filter, int layer, int16_t priority, uint64_t flags);
typedef BOOL(__cdecl *wd_recv_ex_fn)(HANDLE handle, void *packet, UINT packet_len, UINT *recv_len, uint64_t flags,
                                     wd_address *addr, UINT *addr_len, LPOVERLAPPED overlapped);
typedef BOOL(__cdecl *wd_send_ex_fn)(HANDLE handle, const void *packet, UINT packet_len, UINT *send_len,
                                     uint64_t flags, const wd_address *addr, UINT addr_len, LPOVERLAPPED overlapped);
typedef BOOL(__cdecl *wd_shutdown_fn)(HANDLE handle, int how);
typedef BOOL(__cdecl *wd_close_fn)(HANDLE handle);
typedef BOOL(__cdecl *wd_set_param_fn)(HANDLE handle, int param, uint64_t value);
typedef BOOL(__cdecl *wd_get_param_fn)(HANDLE handle, int param, uint64_t *value);
typedef BOOL(__cdecl *wd_compile_filter_fn)(const char *filter, int layer, char *object, UINT object_len,
                                            const char **error_str, UINT *error_pos);

#endif
