FROM reg.example/a:1 \
AS x
FROM x
