FROM reg.example/a:1
COPY --from reg.example/b:1 /f /g
