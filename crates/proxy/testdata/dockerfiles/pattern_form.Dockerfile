ARG V=1.2
FROM reg.example/a:${V%.*}
