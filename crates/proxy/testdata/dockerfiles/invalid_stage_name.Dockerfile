FROM reg.example/a:1 AS 1st
