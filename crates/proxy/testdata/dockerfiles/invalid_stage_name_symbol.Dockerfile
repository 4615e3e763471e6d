FROM reg.example/a:1 AS a$b
