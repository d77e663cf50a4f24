module windows-redirector/go/redirector

go 1.19
