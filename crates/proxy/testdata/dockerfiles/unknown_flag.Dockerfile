FROM reg.example/a:1
COPY --nope=1 /f /g
