module example.com/seedabi

go 1.19
