// A user's C# program on csharp/WindowsRedirector.cs (test/dist.test.ts builds
// it from an unpacked release bundle): prints the library's version.
using System;
using WindowsRedirector;

static class Program
{
    static int Main()
    {
        Console.WriteLine("version " + Redirector.Version);
        return 0;
    }
}
