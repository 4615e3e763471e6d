FROM reg.example/a:1 AS x\\
FROM reg.example/b:1
