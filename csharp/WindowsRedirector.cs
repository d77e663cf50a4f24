// P/Invoke binding of windows_redirector (windows_redirector.dll on Windows,
// libwindows_redirector.so on Linux through a dllmap: see
// WindowsRedirectorSample.exe.config). The library is global to the process,
// so this is a static class. The library's last error belongs to the calling
// thread, so a failed call's error is read right after it on the same thread;
// each error code is an exception class carrying the library's own text.
using System;
using System.Collections.Generic;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;

namespace WindowsRedirector
{
    /// <summary>The REDIRECTOR_E* codes of windows_redirector.h.</summary>
    public enum ErrorCode
    {
        Ok = 0,
        AlreadyRunning = -101,
        NotRunning = -102,
        Null = -103,
        BadConfig = -104,
        NotUtf8 = -105,
        Init = -106,
        NotFound = -107,
        Invalid = -108,
        Engine = -109,
        NoEvent = -110,
        NoMemory = -111,
    }

    public class RedirectorException : Exception
    {
        public ErrorCode Code { get; }
        public RedirectorException(ErrorCode code, string message) : base(message) { Code = code; }
    }

    public sealed class AlreadyRunningException : RedirectorException { public AlreadyRunningException(string m) : base(ErrorCode.AlreadyRunning, m) { } }
    public sealed class NotRunningException : RedirectorException { public NotRunningException(string m) : base(ErrorCode.NotRunning, m) { } }
    public sealed class NullArgumentException : RedirectorException { public NullArgumentException(string m) : base(ErrorCode.Null, m) { } }
    public sealed class ConfigException : RedirectorException { public ConfigException(string m) : base(ErrorCode.BadConfig, m) { } }
    public sealed class NotUtf8Exception : RedirectorException { public NotUtf8Exception(string m) : base(ErrorCode.NotUtf8, m) { } }
    public sealed class InitException : RedirectorException { public InitException(string m) : base(ErrorCode.Init, m) { } }
    public sealed class NotFoundException : RedirectorException { public NotFoundException(string m) : base(ErrorCode.NotFound, m) { } }
    public sealed class InvalidArgumentException : RedirectorException { public InvalidArgumentException(string m) : base(ErrorCode.Invalid, m) { } }
    public sealed class EngineException : RedirectorException { public EngineException(string m) : base(ErrorCode.Engine, m) { } }
    public sealed class NoEventException : RedirectorException { public NoEventException(string m) : base(ErrorCode.NoEvent, m) { } }
    public sealed class NoMemoryException : RedirectorException { public NoMemoryException(string m) : base(ErrorCode.NoMemory, m) { } }

    public enum Direction { Outbound = 0, Inbound = 1 }
    public enum EventType { Opened = 1, Closed = 2 }

    /// <summary>Where a redirected connection was going, and who opened it.</summary>
    public sealed class Origin
    {
        public IPEndPoint Destination, Client, Peer;
        public int Pid;
        public string Process; // the executable's path ("" when unknown)
        public ProtocolType Protocol;
        public Direction Direction;
        public int AppPort;
        public uint FlowId;
        public ulong BytesUp, BytesDown;
    }

    public sealed class RedirectorEvent
    {
        public EventType Type;
        public ulong TimeMs; // the library's monotonic clock
        public Origin Origin;
    }

    // The C structs, laid out as in windows_redirector.h.
    [StructLayout(LayoutKind.Sequential)]
    internal struct NativeEndpoint
    {
        public byte Family;
        public byte Reserved;
        public ushort Port;
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = 16)] public byte[] Addr;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct NativeOrigin
    {
        public uint Size, Protocol, Direction, Pid;
        public NativeEndpoint Destination, Client, Peer;
        public ushort AppPort, Reserved;
        public uint FlowId;
        public ulong BytesUp, BytesDown;
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = 1024)] public byte[] ProcessPath;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct NativeEvent
    {
        public uint Size, Type;
        public ulong TimeMs;
        public NativeOrigin Origin;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct NativeStats
    {
        public uint Size, Running;
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = 26)] public ulong[] Counters;
    }

    internal static class Native
    {
        // "windows_redirector" is windows_redirector.dll on Windows; mono maps
        // it to the .so with the dllmap in the program's .exe.config.
        const string Lib = "windows_redirector";
        const CallingConvention C = CallingConvention.Cdecl;

        [DllImport(Lib, CallingConvention = C)] internal static extern void initialize_global_config();
        [DllImport(Lib, CallingConvention = C)] internal static extern int start_redirector();
        [DllImport(Lib, CallingConvention = C)] internal static extern int stop_redirector();
        [DllImport(Lib, CallingConvention = C)] internal static extern int get_redirector_status();
        [DllImport(Lib, CallingConvention = C)] internal static extern int set_redirector_config(byte[] json);
        [DllImport(Lib, CallingConvention = C)] internal static extern int redirector_set_app_port(ushort port);
        [DllImport(Lib, CallingConvention = C)] internal static extern int redirector_lookup(int protocol, ref NativeEndpoint peer, ref NativeEndpoint local, ref NativeOrigin origin);
        [DllImport(Lib, CallingConvention = C)] internal static extern int redirector_next_event(ref NativeEvent ev, uint timeoutMs);
        [DllImport(Lib, CallingConvention = C)] internal static extern int redirector_get_stats(ref NativeStats stats);
        [DllImport(Lib, CallingConvention = C)] internal static extern int redirector_would_intercept(uint pid, byte[] path);
        [DllImport(Lib, CallingConvention = C)] internal static extern int redirector_last_error(byte[] buf, UIntPtr len);
        [DllImport(Lib, CallingConvention = C)] internal static extern int redirector_last_error_code();
        [DllImport(Lib, CallingConvention = C)] internal static extern IntPtr redirector_strerror(int code);
        [DllImport(Lib, CallingConvention = C)] internal static extern IntPtr redirector_version();
        [DllImport(Lib, CallingConvention = C)] internal static extern int redirector_set_windivert_path(byte[] dir);
        [DllImport(Lib, CallingConvention = C)] internal static extern int redirector_debug_inject_fault(int which);
    }

    public static class Redirector
    {
        public const int Tcp = 6, Udp = 17;

        public static string Version => Utf8(Native.redirector_version());
        public static string StrError(ErrorCode code) => Utf8(Native.redirector_strerror((int)code));
        public static bool IsRunning => Native.get_redirector_status() == 1;

        /// <summary>Replaces the configuration (JSON, see set_redirector_config).</summary>
        public static void Configure(string json) => Configure(json == null ? null : Utf8Bytes(json));

        /// <summary>The same with the UTF-8 bytes of the JSON text (no NUL needed;
        /// a NUL byte in it is a ConfigException).</summary>
        public static void Configure(byte[] utf8Json)
        {
            if (Native.set_redirector_config(utf8Json == null ? null : NulTerminated(utf8Json, "the configuration", true)) != 0)
                ThrowLastError();
        }

        /// <summary>The port your proxy listens on (0 unsets it). While running,
        /// InitException if the capture could not be set up for it; the old port stays.</summary>
        public static void SetAppPort(ushort port)
        {
            if (Native.redirector_set_app_port(port) != 0) ThrowLastError();
        }

        public static void SetWinDivertPath(string dir)
        {
            if (Native.redirector_set_windivert_path(string.IsNullOrEmpty(dir) ? null : Cstr(dir, "the folder")) != 0)
                ThrowLastError();
        }

        /// <summary>Starts redirecting; InitException says why it could not
        /// ("WinDivert driver not found", "Access denied", no app port...).</summary>
        public static void Start()
        {
            if (Native.start_redirector() != 0) ThrowLastError();
        }

        public static void Stop()
        {
            if (Native.stop_redirector() != 0) ThrowLastError();
        }

        public static bool WouldIntercept(int pid, string processPath = null)
        {
            if (pid < 0) throw new InvalidArgumentException($"pid {pid} is out of range");
            int rc = Native.redirector_would_intercept((uint)pid, processPath == null ? null : Cstr(processPath, "the path"));
            if (rc < 0) ThrowLastError();
            return rc == 1;
        }

        /// <summary>Where was an accepted TCP connection (or a connected UDP socket) going?</summary>
        public static Origin Lookup(Socket socket)
        {
            int proto = socket.ProtocolType == ProtocolType.Udp ? Udp : Tcp;
            if (!(socket.LocalEndPoint is IPEndPoint local) || !(socket.RemoteEndPoint is IPEndPoint peer))
                throw new InvalidArgumentException("Lookup: the socket is not a connected IP socket");
            return Lookup(proto, local, peer);
        }

        /// <summary>Where was the connection (or datagram) from peer to local going?</summary>
        public static Origin Lookup(int protocol, IPEndPoint local, IPEndPoint peer)
        {
            var p = ToNative(peer);
            var l = ToNative(local);
            var o = NewOrigin();
            if (Native.redirector_lookup(protocol, ref p, ref l, ref o) != 0) ThrowLastError();
            return FromNative(o);
        }

        /// <summary>The oldest event, waiting up to timeout inside the library (so
        /// an event is returned as soon as it comes); null when none came.</summary>
        public static RedirectorEvent NextEvent(TimeSpan timeout)
        {
            var deadline = DateTime.UtcNow + timeout;
            var ev = new NativeEvent { Origin = NewOrigin() };
            for (;;)
            {
                ev.Size = (uint)Marshal.SizeOf(typeof(NativeEvent));
                var left = deadline - DateTime.UtcNow;
                int rc = Native.redirector_next_event(ref ev, (uint)Math.Max(0, Math.Min(left.TotalMilliseconds, 1000)));
                if (rc == 0)
                    return new RedirectorEvent { Type = (EventType)ev.Type, TimeMs = ev.TimeMs, Origin = FromNative(ev.Origin) };
                if (rc != (int)ErrorCode.NoEvent) ThrowLastError();
                if (DateTime.UtcNow >= deadline) return null;
            }
        }

        static readonly string[] StatNames = {
            "packets", "rewritten", "passed", "held", "dropped", "malformed", "fragments", "flows_active",
            "flows_redirected", "flows_passed", "flows_expired", "table_full", "evictions", "hold_timeouts",
            "owner_facts", "owner_queries", "events_lost", "nat_conflicts", "bypassed", "lookups",
            "lookup_misses", "engine_restarts", "flow_capacity", "bytes_per_flow", "redirected_syn_unanswered",
            "redirected_syn_refused" };

        /// <summary>The counters of redirector_stats by their C names, plus "running" (0 or 1).</summary>
        public static Dictionary<string, ulong> GetStats()
        {
            var s = new NativeStats { Size = (uint)Marshal.SizeOf(typeof(NativeStats)), Counters = new ulong[26] };
            if (Native.redirector_get_stats(ref s) != 0) ThrowLastError();
            var d = new Dictionary<string, ulong> { ["running"] = s.Running };
            for (int i = 0; i < StatNames.Length; i++) d[StatNames[i]] = s.Counters[i];
            return d;
        }

        /// <summary>The calling thread's last error: its code and text (the
        /// library keeps one per thread).</summary>
        public static KeyValuePair<ErrorCode, string> LastError()
        {
            int n = Native.redirector_last_error(null, UIntPtr.Zero);
            var buf = new byte[n + 1];
            Native.redirector_last_error(buf, (UIntPtr)buf.Length);
            return new KeyValuePair<ErrorCode, string>((ErrorCode)Native.redirector_last_error_code(),
                Encoding.UTF8.GetString(buf, 0, n));
        }

        public static RedirectorException ExceptionFor(ErrorCode code, string text)
        {
            switch (code)
            {
                case ErrorCode.AlreadyRunning: return new AlreadyRunningException(text);
                case ErrorCode.NotRunning: return new NotRunningException(text);
                case ErrorCode.Null: return new NullArgumentException(text);
                case ErrorCode.BadConfig: return new ConfigException(text);
                case ErrorCode.NotUtf8: return new NotUtf8Exception(text);
                case ErrorCode.Init: return new InitException(text);
                case ErrorCode.NotFound: return new NotFoundException(text);
                case ErrorCode.Invalid: return new InvalidArgumentException(text);
                case ErrorCode.Engine: return new EngineException(text);
                case ErrorCode.NoEvent: return new NoEventException(text);
                case ErrorCode.NoMemory: return new NoMemoryException(text);
                default: return new RedirectorException(code, text);
            }
        }

        // Called right after a failed call, on its thread: the last error is
        // that call's own, and its code also says which cause a seed
        // function's -1/-2/-3 means.
        static void ThrowLastError()
        {
            var last = LastError();
            throw ExceptionFor(last.Key, last.Value);
        }

        internal static NativeOrigin NewOrigin() => new NativeOrigin
        {
            Size = (uint)Marshal.SizeOf(typeof(NativeOrigin)),
            Destination = new NativeEndpoint { Addr = new byte[16] },
            Client = new NativeEndpoint { Addr = new byte[16] },
            Peer = new NativeEndpoint { Addr = new byte[16] },
            ProcessPath = new byte[1024],
        };

        // Addresses as given: the library understands IPv4-mapped ones.
        static NativeEndpoint ToNative(IPEndPoint ep)
        {
            var b = ep.Address.GetAddressBytes();
            var n = new NativeEndpoint { Family = (byte)(b.Length == 4 ? 4 : 6), Port = (ushort)ep.Port, Addr = new byte[16] };
            Array.Copy(b, n.Addr, b.Length);
            return n;
        }

        static IPEndPoint FromNative(NativeEndpoint n)
        {
            if (n.Family == 4) return new IPEndPoint(new IPAddress(new[] { n.Addr[0], n.Addr[1], n.Addr[2], n.Addr[3] }), n.Port);
            if (n.Family == 6) return new IPEndPoint(new IPAddress(n.Addr), n.Port);
            return null;
        }

        static Origin FromNative(NativeOrigin o)
        {
            int len = Array.IndexOf(o.ProcessPath, (byte)0);
            return new Origin
            {
                Destination = FromNative(o.Destination), Client = FromNative(o.Client), Peer = FromNative(o.Peer),
                Pid = (int)o.Pid, Process = Encoding.UTF8.GetString(o.ProcessPath, 0, len < 0 ? o.ProcessPath.Length : len),
                Protocol = o.Protocol == Udp ? ProtocolType.Udp : ProtocolType.Tcp, Direction = (Direction)o.Direction,
                AppPort = o.AppPort, FlowId = o.FlowId, BytesUp = o.BytesUp, BytesDown = o.BytesDown,
            };
        }

        static byte[] Utf8Bytes(string s)
        {
            try
            {
                return new UTF8Encoding(false, true).GetBytes(s);
            }
            catch (EncoderFallbackException e)
            {
                throw new NotUtf8Exception("the text cannot be UTF-8: " + e.Message);
            }
        }

        static byte[] Cstr(string s, string what) => NulTerminated(Utf8Bytes(s), what, false);

        /// <summary>A copy with a NUL at the end (one there already is fine); a
        /// NUL inside would cut the text short in C, so it is refused
        /// (ConfigException for a configuration, InvalidArgumentException
        /// otherwise).</summary>
        static byte[] NulTerminated(byte[] b, string what, bool config)
        {
            int len = b.Length > 0 && b[b.Length - 1] == 0 ? b.Length - 1 : b.Length;
            int at = Array.IndexOf(b, (byte)0, 0, len);
            if (at >= 0)
            {
                string m = $"{what} holds a NUL byte at offset {at}";
                if (config) throw new ConfigException(m);
                throw new InvalidArgumentException(m);
            }
            var c = new byte[len + 1];
            Array.Copy(b, c, len);
            return c;
        }

        static string Utf8(IntPtr p)
        {
            if (p == IntPtr.Zero) return "";
            int n = 0;
            while (Marshal.ReadByte(p, n) != 0) n++;
            var b = new byte[n];
            Marshal.Copy(p, b, 0, n);
            return Encoding.UTF8.GetString(b);
        }
    }
}
