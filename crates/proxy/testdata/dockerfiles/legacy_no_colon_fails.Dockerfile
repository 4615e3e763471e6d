ARG V=1
FROM reg.example/a:${V-2}
FROM reg.example/b:1
