FROM reg.example/a:1 reg.example/b:1
