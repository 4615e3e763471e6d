FROM reg.example/a:1 AS Build
FROM BUILD
COPY --from=build /f /g
FROM reg.example/b:1
