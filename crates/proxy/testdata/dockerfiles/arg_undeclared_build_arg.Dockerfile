FROM reg.example/a:${V}
