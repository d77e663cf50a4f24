// A C# sample on windows_redirector, and the self-test `npm test` runs with
// mono against the Linux library.
//
//   mono WindowsRedirectorSample.exe [--layout FILE]
//                                               the self-test: one "PASS name" or
//                                               "FAIL name: why" line per check; FILE
//                                               is test/csharp/abi_layout.c's output
//   mono WindowsRedirectorSample.exe proxy PORT PID...
//                                               a small transparent TCP proxy for
//                                               the given processes (Windows: as
//                                               Administrator, WinDivert beside it)
using System;
using System.Collections.Generic;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;
using WindowsRedirector;

static class Sample
{
    static int Main(string[] args)
    {
        if (args.Length >= 3 && args[0] == "proxy")
        {
            var pids = new string[args.Length - 2];
            Array.Copy(args, 2, pids, 0, pids.Length);
            return Proxy(ushort.Parse(args[1]), pids);
        }
        return SelfTest(args.Length == 2 && args[0] == "--layout" ? args[1] : null);
    }

    // The sample: redirect the given PIDs' TCP traffic to PORT and relay it.
    static int Proxy(ushort port, string[] pids)
    {
        Redirector.Configure("{\"intercept_pids\": [" + string.Join(",", pids) + "], \"protocols\": [\"tcp\"]}");
        Redirector.SetAppPort(port);
        var listener = new TcpListener(IPAddress.IPv6Any, port);
        listener.Server.DualMode = true;
        listener.Start();
        try
        {
            Redirector.Start();
        }
        catch (InitException e)
        {
            Console.Error.WriteLine(e.Message);
            return 1;
        }
        Console.WriteLine($"redirecting PIDs {string.Join(", ", pids)} to port {port}; Ctrl-C stops");
        for (;;)
        {
            var client = listener.AcceptSocket();
            new Thread(() => Relay(client)).Start();
        }
    }

    static void Relay(Socket client)
    {
        using (client)
        {
            Origin o;
            try
            {
                o = Redirector.Lookup(client);
            }
            catch (NotFoundException)
            {
                // Not redirected: someone connected to the port directly (another
                // machine, another local process). There is nowhere to relay, and
                // it must not be served.
                Console.WriteLine($"{DateTime.Now:HH:mm:ss}  {client.RemoteEndPoint} connected to the port directly (not redirected): closed");
                return;
            }
            catch (RedirectorException e)
            {
                Console.Error.WriteLine($"lookup: {e.Message}");
                return;
            }
            Console.WriteLine($"{DateTime.Now:HH:mm:ss}  PID {o.Pid} ({o.Process}) -> {o.Destination}");
            using (var upstream = new Socket(o.Destination.AddressFamily, SocketType.Stream, ProtocolType.Tcp))
            {
                try
                {
                    upstream.Connect(o.Destination);
                }
                catch (SocketException e)
                {
                    // An exception escaping a thread would end the whole program.
                    Console.Error.WriteLine($"{o.Destination}: {e.Message}");
                    return;
                }
                var up = new Thread(() => Pump(client, upstream));
                up.Start();
                Pump(upstream, client);
                up.Join();
            }
        }
    }

    static void Pump(Socket from, Socket to)
    {
        var buf = new byte[65536];
        try
        {
            int n;
            while ((n = from.Receive(buf)) > 0) to.Send(buf, n, SocketFlags.None);
            to.Shutdown(SocketShutdown.Send);
        }
        catch (SocketException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
    }

    // ------------------------------------------------------------------
    // The self-test

    static int passed, failed;

    // Compares every field offset and struct size with the C compiler's.
    static void CheckLayout(string file)
    {
        var structs = new Dictionary<string, Type> {
            ["redirector_endpoint"] = typeof(NativeEndpoint), ["redirector_origin"] = typeof(NativeOrigin),
            ["redirector_event"] = typeof(NativeEvent), ["redirector_stats"] = typeof(NativeStats) };
        var stats = new List<string> { "packets", "rewritten", "passed", "held", "dropped", "malformed", "fragments",
            "flows_active", "flows_redirected", "flows_passed", "flows_expired", "table_full", "evictions",
            "hold_timeouts", "owner_facts", "owner_queries", "events_lost", "nat_conflicts", "bypassed", "lookups",
            "lookup_misses", "engine_restarts", "flow_capacity", "bytes_per_flow", "redirected_syn_unanswered",
            "redirected_syn_refused" };
        int lines = 0;
        foreach (var line in System.IO.File.ReadAllLines(file))
        {
            var parts = line.Split(' ');
            var name = parts[0].Split('.');
            var type = structs[name[0]];
            lines++;
            if (name.Length == 1)
            {
                Assert(Marshal.SizeOf(type) == long.Parse(parts[1]), $"sizeof {name[0]}: C# {Marshal.SizeOf(type)}, C {parts[1]}");
                continue;
            }
            long offset, size;
            if (type == typeof(NativeStats) && stats.Contains(name[1]))
            {
                offset = (long)Marshal.OffsetOf(type, "Counters") + 8 * stats.IndexOf(name[1]);
                size = 8;
            }
            else
            {
                var field = type.GetField(Pascal(name[1]));
                offset = (long)Marshal.OffsetOf(type, field.Name);
                size = MarshalledSize(field);
            }
            Assert(offset == long.Parse(parts[1]) && size == long.Parse(parts[2]),
                $"{parts[0]}: C# offset {offset} size {size}, C offset {parts[1]} size {parts[2]}");
        }
        Assert(lines > 20, $"only {lines} layout lines in {file}");
    }

    static long MarshalledSize(System.Reflection.FieldInfo f)
    {
        if (!f.FieldType.IsArray) return Marshal.SizeOf(f.FieldType);
        var m = (MarshalAsAttribute)Attribute.GetCustomAttribute(f, typeof(MarshalAsAttribute));
        return m.SizeConst * Marshal.SizeOf(f.FieldType.GetElementType());
    }

    static string Pascal(string snake)
    {
        var sb = new StringBuilder();
        foreach (var w in snake.Split('_')) sb.Append(char.ToUpperInvariant(w[0])).Append(w.Substring(1));
        return sb.ToString();
    }

    static void Check(string name, Action body)
    {
        try
        {
            body();
            passed++;
            Console.WriteLine("PASS " + name);
        }
        catch (Exception e)
        {
            failed++;
            Console.WriteLine("FAIL " + name + ": " + e);
        }
        finally
        {
            if (Redirector.IsRunning) Redirector.Stop();
        }
    }

    static void Assert(bool ok, string what)
    {
        if (!ok) throw new Exception(what);
    }

    static T Throws<T>(Action body, string textPart = null) where T : RedirectorException
    {
        try
        {
            body();
        }
        catch (T e)
        {
            Assert(textPart == null || e.Message.Contains(textPart), $"{typeof(T).Name} says \"{e.Message}\", not \"{textPart}\"");
            return e;
        }
        throw new Exception($"no {typeof(T).Name}");
    }

    static int SelfTest(string layoutFile)
    {
        Check("version", () => Assert(System.Text.RegularExpressions.Regex.IsMatch(Redirector.Version, @"^\d+\.\d+\.\d+"), Redirector.Version));

        Check("error_codes", () =>
        {
            foreach (ErrorCode code in Enum.GetValues(typeof(ErrorCode)))
            {
                if (code == ErrorCode.Ok) continue;
                string text = Redirector.StrError(code);
                Assert(text != "unknown error code", $"{code} ({(int)code}) is not a library code");
                var e = Redirector.ExceptionFor(code, text);
                Assert(e.Code == code && e.GetType().Name.Replace("Exception", "").Length > 0, $"{code}: {e.GetType()}");
            }
            Assert(Redirector.StrError(ErrorCode.AlreadyRunning) == "the redirector is already running", "EALREADY text");
            Assert(Redirector.ExceptionFor(ErrorCode.NotFound, "x") is NotFoundException, "NotFound class");
            Assert(Redirector.StrError((ErrorCode)(-999)) == "unknown error code", "unknown code");
        });

        Check("struct_sizes_equal_the_library", () =>
        {
            // A size one short is refused with a text that tells the size expected.
            var o = Redirector.NewOrigin();
            o.Size = (uint)Marshal.SizeOf(typeof(NativeOrigin)) - 1;
            var ep = new NativeEndpoint { Addr = new byte[16] };
            Assert(Native.redirector_lookup(6, ref ep, ref ep, ref o) == (int)ErrorCode.Invalid, "short origin accepted");
            Assert(Redirector.LastError().Value.Contains($"({Marshal.SizeOf(typeof(NativeOrigin))})"), "origin size: " + Redirector.LastError().Value);
            var ev = new NativeEvent { Origin = Redirector.NewOrigin(), Size = (uint)Marshal.SizeOf(typeof(NativeEvent)) - 1 };
            Assert(Native.redirector_next_event(ref ev, 0) == (int)ErrorCode.Invalid, "short event accepted");
            Assert(Redirector.LastError().Value.Contains($"({Marshal.SizeOf(typeof(NativeEvent))})"), "event size: " + Redirector.LastError().Value);
            var st = new NativeStats { Counters = new ulong[26], Size = (uint)Marshal.SizeOf(typeof(NativeStats)) - 1 };
            Assert(Native.redirector_get_stats(ref st) == (int)ErrorCode.Invalid, "short stats accepted");
            Assert(Redirector.LastError().Value.Contains($"({Marshal.SizeOf(typeof(NativeStats))})"), "stats size: " + Redirector.LastError().Value);
        });

        if (layoutFile != null) Check("struct_layout_equals_the_header", () => CheckLayout(layoutFile));

        // Test PIDs lie above 4194304 (Linux's PID_MAX_LIMIT), so none is this
        // process's own PID, which is never intercepted.
        Check("config_errors", () =>
        {
            Redirector.Configure("{\"intercept_pids\": [4204321], \"description\": \"csharp\"}");
            var e = Throws<ConfigException>(() => Redirector.Configure("{\"max_flows\": 8}"), "max_flows");
            Assert(e.Code == ErrorCode.BadConfig && (int)e.Code == -104, "code");
            Throws<ConfigException>(() => Redirector.Configure("{\"intercept_pids\": [1, -2]}"), "intercept_pids[1]");
            Throws<ConfigException>(() => Redirector.Configure("{\"intercept_pids\": [1,"), "end of input");
            Throws<NotUtf8Exception>(() => Redirector.Configure(new byte[] { (byte)'{', (byte)'"', (byte)'d', (byte)'"', (byte)':', (byte)'"', 0xff, (byte)'"', (byte)'}' }));
            Throws<NotUtf8Exception>(() => Redirector.Configure("{\"description\": \"\ud800\"}"));
            Throws<NullArgumentException>(() => Redirector.Configure((string)null), "NULL");
            // A NUL would cut the text short in C: the valid JSON before it must not pass.
            Throws<ConfigException>(() => Redirector.Configure("{\"intercept_pids\": [4209999]}\0{"), "NUL byte at offset 29");
            Assert(!Redirector.WouldIntercept(4209999), "the text before a NUL was applied");
            // A C string's one NUL at the end is fine.
            Redirector.Configure(Encoding.UTF8.GetBytes("{\"intercept_pids\": [4209998]}\0"));
            Assert(Redirector.WouldIntercept(4209998), "a config ending in one NUL");
            Redirector.Configure("{\"intercept_pids\": [4204321]}");
            Assert(Redirector.WouldIntercept(4204321), "the configuration before was lost");
        });

        // The last error belongs to the thread: threads failing in different
        // ways at once, and other code failing meanwhile, each get their own
        // call's exception and text.
        Check("errors_of_concurrent_threads", () =>
        {
            Redirector.Configure("{\"intercept_pids\": [4204321]}");
            var calls = new[]
            {
                Tuple.Create<Action, Type, string>(() => Redirector.Configure("{\"max_flows\": 8}"), typeof(ConfigException), "set_redirector_config: max_flows"),
                Tuple.Create<Action, Type, string>(() => Redirector.Configure("{\"intercept_pids\": [1, -2]}"), typeof(ConfigException), "set_redirector_config: intercept_pids[1]"),
                Tuple.Create<Action, Type, string>(Redirector.Stop, typeof(NotRunningException), "stop_redirector: the redirector is not running"),
                Tuple.Create<Action, Type, string>(() => Redirector.Lookup(Redirector.Tcp, new IPEndPoint(IPAddress.Loopback, 1), new IPEndPoint(IPAddress.Loopback, 2)),
                    typeof(NotRunningException), "redirector_lookup: the redirector is not running"),
                Tuple.Create<Action, Type, string>(() => Redirector.Lookup(99, new IPEndPoint(IPAddress.Loopback, 1), new IPEndPoint(IPAddress.Loopback, 2)),
                    typeof(InvalidArgumentException), "redirector_lookup: protocol must be"),
            };
            var wrong = new System.Collections.Concurrent.ConcurrentQueue<string>();
            var go = new ManualResetEvent(false);
            int callersLeft = calls.Length;
            Action<Tuple<Action, Type, string>> caller = c =>
            {
                for (int i = 0; i < 1000; i++)
                {
                    try
                    {
                        c.Item1();
                        wrong.Enqueue(c.Item3 + ": no exception");
                        return;
                    }
                    catch (RedirectorException e)
                    {
                        if (e.GetType() != c.Item2 || !e.Message.StartsWith(c.Item3))
                        {
                            wrong.Enqueue($"{c.Item3}: got {e.GetType().Name} \"{e.Message}\"");
                            return;
                        }
                    }
                }
            };
            var threads = new List<Thread>();
            foreach (var c in calls)
            {
                threads.Add(new Thread(() =>
                {
                    go.WaitOne();
                    try
                    {
                        caller(c);
                    }
                    finally
                    {
                        Interlocked.Decrement(ref callersLeft);
                    }
                }));
            }
            for (int k = 0; k < 2; k++)
                threads.Add(new Thread(() =>
                {
                    // Other code in the process, calling the library itself.
                    var bad = Encoding.UTF8.GetBytes("{\0");
                    go.WaitOne();
                    while (Volatile.Read(ref callersLeft) > 0) Native.set_redirector_config(bad);
                }));
            foreach (var t in threads) t.Start();
            go.Set();
            foreach (var t in threads) t.Join();
            Assert(wrong.IsEmpty, string.Join("; ", wrong));
            Assert(Redirector.WouldIntercept(4204321), "the configuration in force was lost");
        });

        Check("would_intercept", () =>
        {
            Redirector.Configure("{\"intercept_pids\": [4201111], \"intercept\": \"curl,!4202222\"}");
            Assert(Redirector.WouldIntercept(4201111), "PID 4201111");
            Assert(Redirector.WouldIntercept(4203333, "/usr/bin/curl"), "curl");
            Assert(!Redirector.WouldIntercept(4202222, "/usr/bin/curl"), "!4202222");
            Assert(!Redirector.WouldIntercept(System.Diagnostics.Process.GetCurrentProcess().Id, "/usr/bin/curl"), "self");
            Throws<InvalidArgumentException>(() => Redirector.WouldIntercept(-1), "out of range");
            Throws<InvalidArgumentException>(() => Redirector.WouldIntercept(4203333, "/usr/bin/curl\0/x"), "NUL byte");
        });

        Check("engine_failure", () =>
        {
            Redirector.Configure("{\"intercept_pids\": [5555]}");
            Assert(Native.redirector_debug_inject_fault(1) == 0, "inject");
            Throws<EngineException>(() => Redirector.Configure("{\"intercept_pids\": [6666]}"), "set_redirector_config");
            Assert(Redirector.WouldIntercept(5555), "the configuration in force was lost");
        });

        Check("out_of_memory", () =>
        {
            Redirector.Configure("{\"intercept_pids\": [5555]}");
            Assert(Native.redirector_debug_inject_fault(4) == 0, "inject"); // REDIRECTOR_FAULT_MEMORY
            var e = Throws<NoMemoryException>(() => Redirector.Configure("{\"intercept_pids\": [6666]}"), "set_redirector_config: out of memory");
            Assert((int)e.Code == -111, "code");
            Assert(Redirector.WouldIntercept(5555) && !Redirector.WouldIntercept(6666), "the configuration in force changed");
        });

        Check("start_stop", () =>
        {
            Redirector.SetAppPort(0);
            Throws<InitException>(Redirector.Start, "update_app_port");
            Redirector.SetAppPort(18280);
            Throws<NotRunningException>(Redirector.Stop, "not running");
            Redirector.Start();
            Assert(Redirector.IsRunning, "not running after Start");
            Throws<AlreadyRunningException>(Redirector.Start, "already running");
            Redirector.Stop();
            Assert(!Redirector.IsRunning, "running after Stop");
            Redirector.Start(); // again after a stop
            Redirector.Stop();
        });

        Check("lookup_not_redirected", () =>
        {
            var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            int port = ((IPEndPoint)listener.LocalEndpoint).Port;
            Redirector.SetAppPort((ushort)port);
            using (var client = new TcpClient())
            {
                client.Connect(IPAddress.Loopback, port);
                using (var accepted = listener.AcceptSocket())
                {
                    Throws<NotRunningException>(() => Redirector.Lookup(accepted), "redirector_lookup");
                    Redirector.Configure("{\"max_flows\": 1024}");
                    Redirector.Start();
                    Throws<NotFoundException>(() => Redirector.Lookup(accepted), "no redirected TCP");
                    Throws<NotFoundException>(() => Redirector.Lookup(Redirector.Udp, new IPEndPoint(IPAddress.IPv6Any, port),
                        new IPEndPoint(IPAddress.Parse("::ffff:198.18.0.10"), 53)), "UDP");
                    var stats = Redirector.GetStats();
                    Assert(stats["running"] == 1 && stats["flow_capacity"] == 1024 && stats["lookup_misses"] >= 2,
                        $"stats: running {stats["running"]} capacity {stats["flow_capacity"]} misses {stats["lookup_misses"]}");
                }
            }
            listener.Stop();
        });

        Check("events", () =>
        {
            Throws<NotRunningException>(() => Redirector.NextEvent(TimeSpan.Zero), "redirector_next_event");
            Redirector.SetAppPort(18281);
            Redirector.Start();
            Assert(Redirector.NextEvent(TimeSpan.FromMilliseconds(50)) == null, "an event without traffic");
        });

        Check("windivert_path", () =>
        {
            Redirector.SetWinDivertPath(@"C:\WinDivert");
            Redirector.SetWinDivertPath(null);
            Throws<InvalidArgumentException>(() => Redirector.SetWinDivertPath("C:\\Win\0Divert"), "NUL byte");
        });

        Console.WriteLine($"{passed} passed, {failed} failed");
        return failed == 0 ? 0 : 1;
    }
}
