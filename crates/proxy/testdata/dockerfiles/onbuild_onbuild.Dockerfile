FROM reg.example/a:1
ONBUILD ONBUILD COPY f g
