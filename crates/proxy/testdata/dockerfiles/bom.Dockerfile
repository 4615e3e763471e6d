FROM reg.example/a:1
