module example.com/seedexample

go 1.19
