COPY f g
FROM reg.example/a:1
